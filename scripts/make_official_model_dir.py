"""Describe already-downloaded official SANA-WM files as a sanawm model folder (no copying, no network).

    python scripts/make_official_model_dir.py --out models/sana-wm \\
        --transformer /data/SANA-WM/SANA-WM_bidirectional.safetensors \\
        --vae /data/SANA-WM/vae --text-encoder /data/SANA-WM/text_encoder \\
        --tokenizer /data/SANA-WM/tokenizer

writes `models/sana-wm/model.json` pointing at those paths (see `sanawm.modeldir`), with the
release's generation settings (704x1280, 16 fps, 60 steps, shift 8, text guidance 5) and the
instruction prefix its Gemma-2 prompts were encoded with. Then:

    sanawm generate --model models/sana-wm --image photo.jpg --action "w-80" --prompt "..." --out clip.mp4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sanawm.modeldir import GenerationSettings, read_model_dir, write_model_json
from sanawm.text import TextEncoderConfig

# The instruction the release prepends to every prompt before Gemma-2 encodes it (data of the
# public SANA / SANA-WM release; the text states were trained with it).
SANA_PROMPT_PREFIX = "\n".join(
    [
        'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
        "image generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
        "relationships to create vivid and concrete scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without "
        "overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
        "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing "
        "street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering "
        "glass skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any additional "
        "commentary or evaluations:",
        "User Prompt: ",
    ]
)

RELEASE_SETTINGS = GenerationSettings(
    height=704, width=1280, fps=16.0, steps=60, flow_shift=8.0, cfg=5.0, camera_cfg=1.0, chunk_size=3
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="model folder to write model.json into")
    p.add_argument("--transformer", required=True,
                   help="released stage-1 checkpoint file, or a diffusers transformer folder")  # fmt: skip
    p.add_argument("--vae", required=True, help="LTX-2 VAE folder (diffusers AutoencoderKLLTX2Video)")
    p.add_argument("--text-encoder", required=True, help="Gemma-2 folder (transformers)")
    p.add_argument("--tokenizer", required=True, help="Gemma-2 tokenizer folder")
    args = p.parse_args()
    components = {
        "transformer": str(Path(args.transformer).resolve()),
        "vae": str(Path(args.vae).resolve()),
        "text_encoder": str(Path(args.text_encoder).resolve()),
        "tokenizer": str(Path(args.tokenizer).resolve()),
    }
    path = write_model_json(
        args.out, RELEASE_SETTINGS, components, TextEncoderConfig(max_length=300, prompt_prefix=SANA_PROMPT_PREFIX)
    )
    read_model_dir(args.out)  # every component path must exist
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
