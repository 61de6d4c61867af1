"""One attention-kernel compile child (as minbert.training.kernel_compile starts it for
configs/default.yaml), its phases time-stamped: the interpreter's start to this line, importing
torch, CUDA's first use, importing our kernel's module, the compile (Triton's JIT at the first
launch). argv: encoder folder, part (forward, backward-dq, backward-dkdv). Prints one JSON line."""

import time

T0 = time.time()
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

t_torch = time.time()
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
t_cuda = time.time()
from minbert.model.varlen_triton import compile_for_encoder  # noqa: E402

t_mod = time.time()
done = compile_for_encoder(sys.argv[1], {"attn_implementation": "sdpa", "varlen_kernel": "auto"}, torch.bfloat16,
                           sys.argv[2])
t_end = time.time()
print(json.dumps({"part": sys.argv[2], "compiled": done is not None, "t0": T0, "import_torch_s": round(t_torch - T0, 3),
                  "cuda_init_s": round(t_cuda - t_torch, 3), "import_kernel_s": round(t_mod - t_cuda, 3),
                  "compile_s": round(t_end - t_mod, 3), "end": t_end}))
