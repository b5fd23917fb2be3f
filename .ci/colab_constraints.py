"""Write .ci/colab-constraints.txt from Colab's published package list.

Colab decides the versions the notebooks run on. Google publishes its runtime's packages in the
googlecolab/backend-info repository (pip-freeze.gpu.txt, os-info-gpu.txt). To follow Colab:

    git clone https://github.com/googlecolab/backend-info /tmp/backend-info
    python .ci/colab_constraints.py /tmp/backend-info > .ci/colab-constraints.txt

then raise requirements.txt's and pyproject.toml's lower bounds to the new versions (CI's Colab
leg runs exactly these, so every lower bound stays a tested one).
"""
import re
import subprocess
import sys
from pathlib import Path

# What the project imports, and what those pin in ways that matter to it.
OURS = ["torch", "transformers", "tokenizers", "accelerate", "datasets", "huggingface-hub",
        "safetensors", "numpy", "pandas", "pyarrow", "fsspec", "matplotlib", "seaborn", "tqdm",
        "tensorflow", "keras", "protobuf", "tensorflow-datasets", "tensorflow-metadata", "etils", "ipywidgets", "ipykernel",
        "ipython", "jupyter-client", "nbformat", "nbconvert", "pytest"]
# Not in Colab: pinned at requirements.txt's lower bound, so that bound is tested too.
NOT_IN_COLAB = {"nbval": "0.11.0", "hypothesis": "6.100.0", "jupyter": "1.1.1",
                "importlib-resources": "6.0.0"}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(repo: str) -> None:
    repo = Path(repo)
    git = ["git", "-C", str(repo), "log", "-1", "--format=%h %ad", "--date=short"]
    commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    python = re.search(r"Python (\d+\.\d+)", (repo / "os-info-gpu.txt").read_text()).group(1)
    pins = {}
    for line in (repo / "pip-freeze.gpu.txt").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match and normal(match[1]) in OURS:
            pins[normal(match[1])] = match[2].split("+")[0]  # torch 2.11.0+cu128 -> 2.11.0
    missing = sorted(set(OURS) - set(pins))
    if missing:
        sys.exit(f"not in pip-freeze.gpu.txt: {missing}")
    print(f"# Colab's GPU runtime: googlecolab/backend-info {commit}, pip-freeze.gpu.txt (Python {python}).")
    print("# Written by .ci/colab_constraints.py; CI's second leg installs under these constraints.")
    print(f"# python {python}")
    pins["tensorflow-cpu"] = pins["tensorflow"]  # requirements.txt's name for it on Linux x86-64
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    print("# Not in Colab: requirements.txt's lower bounds, so that they are tested too.")
    for name, version in NOT_IN_COLAB.items():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1])
