"""Build steps pyproject.toml cannot express: ship ``terratorch_hsi_peft_autoload.pth``.

Python runs ``.pth`` files only from the top of site-packages, which no package directory can
reach, so the regular wheel (``build_py``) and the editable one (``pip install -e``) each place
it there themselves. All metadata lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).resolve().parent / "terratorch_hsi_peft_autoload.pth"


class BuildPyWithPth(build_py):
    """``build_py`` that also puts the ``.pth`` at the root of the wheel (= site-packages)."""

    def run(self) -> None:
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH.name)]


class EditableWheelWithPth(editable_wheel):
    """``editable_wheel`` whose wheel also holds the ``.pth`` (its build_lib is not shipped)."""

    def _install_namespaces(self, installation_dir, pth_prefix) -> None:
        super()._install_namespaces(installation_dir, pth_prefix)
        self.copy_file(str(PTH), str(Path(installation_dir) / PTH.name))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
