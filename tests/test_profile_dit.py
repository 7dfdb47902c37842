"""scripts/profile_dit.py: kernel names from a real H200 profile sort into the right kinds, and
the tiny CPU run writes its summary (structure, not speed)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "profile_dit.py"


@pytest.fixture(scope="module")
def profile_dit():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("profile_dit", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_cga1x1x1_kernel0_0",
         "attention"),
        ("nvjet_sm90_tst_192x208_64x4_2x1_v_bz_coopB_bias_TNT", "gemm"),
        ("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x32x8_stage3_warpsize2x2x1_ffma_aligna4", "gemm"),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "conv (cuDNN)"),
        ("conv2d_c1_k1_nhwc_specialized", "conv (cuDNN)"),
        ("_scan_kernel", "GDN kernels"),
        ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float>", "layout copies"),
        ("Memcpy DtoD (Device -> Device)", "layout copies"),
        ("triton_poi_fused_cat_clone_3", "layout copies"),
        # Triton kernels that compute while they transpose are element-wise work, not copies.
        ("triton_red_fused__to_copy_add_cat_linalg_vector_norm_mul_select_slice_split_stack_sub_transpose_view_5",
         "triton fused element-wise"),
        ("triton_poi_fused_convolution_mul_permute_silu_split_view_7", "triton fused element-wise"),
        ("triton_red_fused__to_copy_abs_amax_clamp_div_0", "fp8 quantisation"),
        ("void at::native::vectorized_elementwise_kernel<8, at::native::FillFunctor<c10::BFloat16>>",
         "aten element-wise / reductions"),
    ],
)  # fmt: skip
def test_kernel_kinds(profile_dit, name, kind):
    assert profile_dit.kernel_kind(name) == kind


def test_tiny_cpu_run_writes_kinds_and_top_kernels(tmp_path):
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--frames", "9", "--rows", "5", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = json.loads(out.read_text())
    assert record["variant"] == "bf16" and record["latents"] == "2x4x6" and not record["compiled"]
    assert len(record["top"]) == 5 and record["kernel_ms"] > 0
    assert abs(sum(v["ms"] for v in record["by_kind"].values()) - record["kernel_ms"]) < 1e-6 * record["kernel_ms"]
