"""The FP8 attention kernel compiled for an H100 / H200 (sm90) on any machine, no GPU needed.

    python scripts/check_fp8_attention_sm90.py

For each configuration of `sanawm.ops.fp8_attention_kernel` (CONFIGS, which are autotuned,
and POLY_CONFIGS; and the first one with Hopper's own FP8 accumulation in P . V) it compiles
the kernel ahead of time with Triton's bundled ptxas, as a launch on the model's tensors is
specialised, and prints: shared memory,
registers and spill bytes per thread (cuobjdump), the FP8 tensor-core instructions (wgmma
e4m3 in the PTX), and the instruction mix of one key tile in the main loop (SASS). From that
mix, lower bounds in SM cycles per 128 x 128 block of scores (perfect overlap assumed):
issue slots (4 warp instructions per cycle), MUFU (exp2: 16 lanes per cycle), FP32 (128 lanes
per cycle) and tensor cores (dense FP8: 8,192 FLOP per cycle), and the time per 961-frame
attention (106,480 tokens, 20 heads) they imply on 132 SMs at 1.98 GHz. These are
predictions from the code, not measurements: scripts/bench_fp8_attention.py measures.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter

import triton

from sanawm.ops.fp8_attention_kernel import CONFIGS, POLY_CONFIGS, compile_for_sm90

TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TOKENS, HEADS, SMS, CLOCK_HZ = 106_480, 20, 132, 1.98e9
FP32_OPS = ("FFMA", "FADD", "FMUL", "FMNMX")


def cubin_tool(tool: str, cubin: bytes, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([os.path.join(TOOLS, tool), *flags, f.name], capture_output=True, text=True).stdout


def main_loop_mix(sass: str) -> Counter:
    """Opcode counts of the loop whose body holds the most tensor-core instructions."""
    lines = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: Counter = Counter()
    for i, (addr, text) in enumerate(lines):
        jump = re.search(r"BRA (?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", text)
        if not jump or not jump.group(1) or int(jump.group(1), 16) >= addr:
            continue
        start = int(jump.group(1), 16)
        body = [t for a, t in lines[:i + 1] if a >= start]
        ops = Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
        if ops["QGMMA"] > best["QGMMA"]:
            best = ops
    return best


def main() -> None:
    variants = [(c, True) for c in CONFIGS + POLY_CONFIGS] + [(CONFIGS[0], False)]
    rows = []
    for config, precise in variants:
        kernel = compile_for_sm90(config, precise_pv=precise)
        usage = cubin_tool("cuobjdump", kernel.asm["cubin"], "-res-usage")
        regs = int(re.search(r"REG:(\d+)", usage).group(1))
        stack = int(re.search(r"STACK:(\d+)", usage).group(1))
        wgmma = len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n\d+k32\.f32\.e4m3\.e4m3", kernel.asm["ptx"]))
        mix = main_loop_mix(cubin_tool("cuobjdump", kernel.asm["cubin"], "-sass"))
        block_m, warps, poly = config.kwargs["BLOCK_M"], config.num_warps, config.kwargs["POLY"]
        per_block = (2 if poly == 2 else 1) * block_m / 128  # 128 x 128 score blocks per loop iteration
        ctas = max(1, min(65536 // (regs * 32 * warps), 232448 // max(1, kernel.metadata.shared)))
        issue = sum(mix.values()) * warps / 4 / per_block
        mufu = mix["MUFU"] * warps * 32 / 16 / per_block
        fp32 = sum(mix[o] for o in FP32_OPS) * warps * 32 / 128 / per_block
        tensor = 2 * 2 * 128 * 128 * 128 / 8192
        bound = max(issue, mufu, fp32, tensor)
        blocks = (TOKENS / 128) ** 2 * HEADS
        label = f"BLOCK_M={block_m} warps={warps} stages={config.num_stages} poly={poly}" + ("" if precise else " imprecise-PV")
        rows.append((label, kernel.metadata.shared, regs, stack, ctas, wgmma, issue, mufu, fp32, tensor,
                     blocks * bound / SMS / CLOCK_HZ, mix))  # fmt: skip
    print(f"{'configuration':>44} {'smem KB':>7} {'regs':>4} {'stack':>5} {'CTA/SM':>6} {'wgmma':>5} "
          f"{'issue':>6} {'MUFU':>6} {'FP32':>6} {'tensor':>6} {'ms >=':>6}")  # fmt: skip
    for label, smem, regs, stack, ctas, wgmma, issue, mufu, fp32, tensor, ms, _ in rows:
        print(f"{label:>44} {smem / 1024:>7.0f} {regs:>4} {stack:>5} {ctas:>6} {wgmma:>5} {issue:>6.0f} {mufu:>6.0f} "
              f"{fp32:>6.0f} {tensor:>6.0f} {ms * 1e3:>6.0f}")  # fmt: skip
    print("\nmain-loop opcodes per warp and iteration, first configuration:",
          ", ".join(f"{op} {n}" for op, n in rows[0][-1].most_common(12)))  # fmt: skip


if __name__ == "__main__":
    main()
