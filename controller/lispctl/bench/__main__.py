"""Run every benchmark module (or those named on the command line)."""
import importlib
import pkgutil
import sys

from lispctl import bench


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    failed = []
    for name in names:
        mod = importlib.import_module(f"lispctl.bench.{name}")
        rec = bench.Recorder(getattr(mod, "SECTION", name))
        print(f"== {name}")
        try:
            mod.run(rec)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"!! {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
        rec.save()
    print(f"figures in {bench.JSON_PATH}, summary in {bench.DOC_PATH}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
