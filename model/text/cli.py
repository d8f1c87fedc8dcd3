"""`python -m model.text precompute`: encode a prompt and a negative prompt once, save them.

Run it on a machine that has the umt5-xxl encoder; the server then only needs the small file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

from .embeddings import save_prompt_embeddings
from .encoder import TEXT_LEN, TextEncoderError, UMT5TextEncoder
from .prompts import resolve_negative_prompt

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.text", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("precompute", help="encode prompt + negative prompt into a safetensors file")
    pre.add_argument("--encoder", required=True, help="folder with umT5 weights and the umt5-xxl tokenizer")
    pre.add_argument("--weights", help="weight file, if the folder holds several")
    pre.add_argument("--tokenizer", help="tokenizer folder, if not in --encoder or --encoder/google/umt5-xxl")
    pre.add_argument("--prompt", required=True)
    pre.add_argument("--negative", default="", help="negative prompt; empty -> the reference default")
    pre.add_argument("-o", "--output", required=True, help="output .safetensors")
    pre.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    pre.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16",
                     help="encoder compute dtype (the reference runs umT5 in bfloat16)")
    pre.add_argument("--text-len", type=int, default=TEXT_LEN)
    return p


def precompute(args: argparse.Namespace) -> int:
    negative = resolve_negative_prompt(args.negative)
    encoder = UMT5TextEncoder.from_folder(args.encoder, weights=args.weights, tokenizer=args.tokenizer,
                                          device=args.device, dtype=_DTYPES[args.dtype], text_len=args.text_len)
    prompt_emb, negative_emb = encoder.encode([args.prompt, negative])
    meta = {"prompt_text": args.prompt, "negative_text": negative, "encoder": "umt5",
            "text_len": str(args.text_len), "dtype": args.dtype}
    path = save_prompt_embeddings(args.output, prompt_emb, negative_emb, meta)
    print(f"wrote {path}: prompt {list(prompt_emb.shape)}, negative {list(negative_emb.shape)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return precompute(args)
    except TextEncoderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
