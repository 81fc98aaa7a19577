"""Run one fuzz target under atheris (libFuzzer) for a number of executions or a time.

    .venv/bin/python tests/fuzz/run_fuzz.py --target rpc_frame --runs 1000000 --max-time 900
    .venv/bin/python tests/fuzz/run_fuzz.py --list

The target starts from its committed corpus (tests/fuzz/corpus/<target>/) and writes what it
finds to a scratch directory; a crash or a hang over 1 s is written to
tests/fuzz/crashes/<target>/ and stops the run (exit non-zero). With --merge the scratch inputs that add
coverage are merged (libFuzzer -merge=1, which keeps a minimal set) into the committed corpus,
also after a finding.
atheris is not a test dependency: when it is missing the script installs requirements-fuzz.txt.
CI does not fuzz: tests/unit/test_fuzz_corpus.py replays the corpus and crash inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANG_LIMIT_S = 1
RSS_LIMIT_MB = 1024  # a shared machine: an input that needs more is a finding too
DICTS_DIR = Path(__file__).resolve().parent / "dicts"  # tokens libFuzzer splices into inputs


def _ensure_atheris() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is missing: installing requirements-fuzz.txt", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-fuzz.txt")],
            check=True,
        )


def _fuzz_inner(target: str, libfuzzer_args: list[str]) -> None:
    """Run in this process: atheris.Setup takes libFuzzer's argv (program first, then flags/dirs)."""
    import atheris

    with atheris.instrument_imports(include=["services", "csv"]):
        from tests.fuzz import targets
    targets.warm_up()
    run_one = targets.TARGETS[target]
    crashes = targets.CRASHES_DIR / target

    def test_one_input(data: bytes) -> None:
        # atheris reports an uncaught exception but (its built-in libFuzzer lacking the sanitizer
        # hooks) writes no crash file: keep the input here before it goes on.
        try:
            run_one(data)
        except BaseException:
            crashes.mkdir(parents=True, exist_ok=True)
            (crashes / f"crash-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            raise

    atheris.Setup(libfuzzer_args, test_one_input)
    atheris.Fuzz()


def _wrapper(tmp: Path, target: str) -> Path:
    """libFuzzer's -merge re-runs argv[0] with its own flags: an executable that lands back here."""
    script = tmp / f"fuzz-{target}"
    script.write_text(
        "#!/bin/sh\n"
        f'cd "{ROOT}" && PYTHONPATH="{ROOT}" exec "{sys.executable}" "{Path(__file__).resolve()}" '
        f'--target {target} --libfuzzer "$0" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="the target's name (see --list)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions (default 1000000)")
    parser.add_argument("--max-time", type=int, default=900, help="seconds at most (default 900)")
    parser.add_argument("--merge", action="store_true", help="merge new coverage into the corpus")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--libfuzzer", metavar="ARGV0", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.libfuzzer:  # run by the wrapper: import the targets only once instrumentation is on
        _fuzz_inner(args.target, [args.libfuzzer, *rest])
        return 0
    from tests.fuzz.targets import CORPUS_DIR, CRASHES_DIR, MAX_LEN, TARGETS

    if args.list:
        print("\n".join(TARGETS))
        return 0
    if args.target not in TARGETS:
        parser.error(f"--target must be one of {', '.join(TARGETS)}")
    _ensure_atheris()
    corpus = CORPUS_DIR / args.target
    crashes = CRASHES_DIR / args.target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{args.target}-") as tmp_name:
        tmp = Path(tmp_name)
        scratch = tmp / "corpus"
        shutil.copytree(corpus, scratch)
        wrapper = _wrapper(tmp, args.target)
        common = [f"-max_len={MAX_LEN}", f"-timeout={HANG_LIMIT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}"]
        dictionary = DICTS_DIR / (
            "json.dict"
            if args.target.startswith("rpc")
            else "http.dict"
            if args.target.startswith("http")
            else "csv.dict"
        )
        fuzz = [
            str(wrapper),
            *common,
            f"-runs={args.runs}",
            f"-max_total_time={args.max_time}",
            f"-artifact_prefix={crashes}/",
            f"-dict={dictionary}",
            "-print_final_stats=1",
            str(scratch),
        ]
        code = subprocess.run(fuzz, cwd=ROOT).returncode
        if args.merge:  # also after a finding: what the run learnt until then is worth keeping
            merge = [str(wrapper), *common, "-merge=1", str(corpus), str(scratch)]
            merged = subprocess.run(merge, cwd=ROOT).returncode
            code = code or merged
        return code


if __name__ == "__main__":
    sys.exit(main())
