"""Whether a SLURM cluster answers here (the dev one: `make slurm-up`), for the `slurm` tests."""
import shutil
import subprocess

SKIP_REASON = "no SLURM cluster answers: run make slurm-up"


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())
