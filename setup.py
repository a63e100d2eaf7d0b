"""Packs the image build context (the Dockerfiles and images/, at the repository root, where
`docker build -f Dockerfile.rocm52 .` wants them) into the package as runner/imagecontext/, so an
installed runner can send them to a host to build. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONTEXT = ["Dockerfile.rocm52", "Dockerfile.cu128", "images"]


class BuildWithImageContext(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "runner" / "imagecontext"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in CONTEXT:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithImageContext})
