"""Prints the directory under PREFIX that this Python imports packages from,
for `meson install` to put the package cryo in: the entry of
site.getsitepackages() in PREFIX's own lib directory (Debian's python3 reads
/usr/local/lib/python3.X/dist-packages and /usr/lib/python3/dist-packages,
not the /usr/local/lib/python3/dist-packages that meson's python module
chooses). For a prefix this Python does not read (no such entry), prints the
usual PREFIX/lib/python3.X/site-packages and says on stderr that PYTHONPATH
must name it. Usage: site-dir.py PREFIX"""
import os
import site
import sys
import sysconfig

prefix = os.path.normpath(sys.argv[1])
for d in site.getsitepackages():
    rel = os.path.relpath(os.path.normpath(d), prefix)
    if rel.split(os.sep)[0] in ("lib", "lib64"):
        print(d)
        sys.exit(0)
d = sysconfig.get_path("purelib", "posix_prefix", {"base": prefix, "platbase": prefix})
print(
    f"the python3 at {sys.executable} imports no packages from under {prefix}: "
    f"the package cryo goes to {d}, which PYTHONPATH must then name",
    file=sys.stderr,
)
print(d)
