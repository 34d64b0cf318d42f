#!/usr/bin/env bash
# The GPU checks of a session lent a CUDA machine (run there from the repo root): versions, the cost of per-step
# timing (events vs synchronize), and the CUDA-only tests. The machine has torch and transformers but may lack
# pydantic/tabulate: carry their wheels in .gpuwheels/ (pip download ... -d .gpuwheels).
set -u
export PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -V
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
python -c "import pydantic, tabulate" 2>/dev/null || pip install -q --no-index --find-links .gpuwheels pydantic tabulate 2>&1 | tail -2
python -c "import scipy; print('scipy', scipy.__version__)" 2>/dev/null || echo "no scipy"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python benchmarks/cuda_step_timing.py --rounds 20 --tokens 64 --batch 1
python benchmarks/cuda_step_timing.py --rounds 20 --tokens 64 --batch 8 | tail -4
python -m pytest -q -p no:cacheprovider -p pytest_llmeff.plugin -s -rs tests/test_gpu.py tests/test_memory.py "$@" 2>&1 | tail -40
