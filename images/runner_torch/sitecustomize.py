"""runner's startup hook in its PyTorch images: applies RUNNER_CONV_BACKEND without editing the job's code.

Python imports the first `sitecustomize` module on sys.path at every start; the images put this folder
on PYTHONPATH. Importing torch here would add about a second to every python in the image and break
pythons that have no torch, so this only installs a meta-path finder that waits for `import torch`
and, once torch's __init__ has run, calls runner_conv.activate_from_env() (see runner_conv.py).
A python that never imports torch, or has none, pays one string comparison per import.

Nothing here may break the user's python: every failure prints one line to stderr and is dropped.
`python -E`, `-I` (PYTHONPATH ignored) and `-S` (no site) start without this hook, as Python intends.

Chaining: this file shadows any other sitecustomize further down sys.path (Debian's and Ubuntu's
/usr/lib/python3.X/sitecustomize.py, a conda environment's). After installing the hook it looks the
name up again on sys.path without this folder and runs the module it finds, so those still run.
Python 3.7 syntax: the ROCm 5.2 base images ship old pythons too.
"""
import sys


def _warn(what, exc):
    try:
        sys.stderr.write("runner sitecustomize: %s (%s: %s); going on without it\n"
                         % (what, type(exc).__name__, exc))
    except Exception:
        pass


def _after_torch_import():
    try:
        import runner_conv
        runner_conv.activate_from_env()
    except Exception as exc:
        _warn("RUNNER_CONV_BACKEND was not applied", exc)


class _TorchImportHook(object):
    """Sees `import torch` before the path finders do, lets them find torch, and wraps the loader's
    exec_module so that _after_torch_import() runs once torch is fully imported."""

    def __init__(self):
        self._busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torch" or self._busy:
            return None
        self._busy = True  # the find_spec below walks sys.meta_path, this finder included
        try:
            import importlib.util
            spec = importlib.util.find_spec("torch")
        except Exception:
            return None  # the import system tries the other finders and reports what they say
        finally:
            self._busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_torch = loader.exec_module

        def exec_module(module):
            exec_torch(module)  # an ImportError from torch itself goes to the user as it is
            if module.__name__ != "torch":
                return  # a loader shared by several modules (a zip's): wait for torch's own turn
            del loader.exec_module  # back to the class's own method
            try:
                sys.meta_path.remove(self)  # torch is imported once per process
            except ValueError:
                pass
            _after_torch_import()

        loader.exec_module = exec_module
        return spec


def _chain_next_sitecustomize():
    # importlib.machinery, not importlib.util: util drags in contextlib and collections, 10 ms a start.
    import os
    from importlib.machinery import PathFinder
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or os.path.abspath(spec.origin or "") == os.path.abspath(__file__):
        return None
    module = type(sys)(spec.name)  # what importlib.util.module_from_spec makes for a source file
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    spec.loader.exec_module(module)
    return module


try:
    if "torch" in sys.modules:  # only when this module is imported by hand after torch
        _after_torch_import()
    elif not any(type(f).__name__ == "_TorchImportHook" for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchImportHook())
except Exception as _exc:
    _warn("the torch import hook was not installed", _exc)

try:
    chained_sitecustomize = _chain_next_sitecustomize()
except Exception as _exc:
    _warn("the next sitecustomize on sys.path failed", _exc)
