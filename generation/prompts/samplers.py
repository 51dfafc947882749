"""The samplers a member may pick with `--sampler NAME`, and the names AUTOMATIC1111 gives them
(written into each PNG's `parameters`). Which diffusers scheduler each one is lives in
`generation.pipelines.samplers`; this module stays free of torch."""

from __future__ import annotations

SAMPLER_LABELS: dict[str, str] = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "unipc": "UniPC",
    "ddim": "DDIM",
    "heun": "Heun",
}
SAMPLER_NAMES = tuple(SAMPLER_LABELS)
