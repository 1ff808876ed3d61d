"""Fetch published PAT encoder weights (for a machine with internet access) and check them.

Where the weights are: the authors' README in the GitHub repository njacobsonlab/Pretrained-Actigraphy-Transformer
links the PAT-S, PAT-M and PAT-L encoder files (Keras .h5, on an external file host). This script knows NO
download URL and NO sha256 of those files: none is written here because none was verified. Copy the link from
that README and pass it with --url; pass --sha256 if you have a checksum you trust, otherwise the script prints
the file's sha256 so you can record it (e.g. in your deployment configuration) and check it next time.

License: the weights are CC BY 4.0. Attribute them wherever they are used or shipped:
  Ruan, Zhang, Oh, Jin, Jacobson, "AI Foundation Models for Wearable Movement Data in Mental Health Research",
  arXiv:2411.15240; weights from github.com/njacobsonlab/Pretrained-Actigraphy-Transformer (CC BY 4.0).

Examples:
  .venv/bin/python tools/pat/fetch_weights.py --url '<link from the README>' --out .local/pat/PAT-S.h5
  .venv/bin/python tools/pat/fetch_weights.py --out .local/pat/PAT-S.h5 --sha256 <hex>   # check a file you have
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

from prediction_worker.pat.weights import PatWeightsError, file_sha256, load_encoder

SOURCE = ("Published PAT weights are linked from the README of github.com/njacobsonlab/Pretrained-Actigraphy-"
          "Transformer\n(external file host; no URL or checksum is built into this tool).")
ATTRIBUTION = ("License CC BY 4.0 - attribution required: Ruan, Zhang, Oh, Jin, Jacobson, \"AI Foundation Models "
               "for Wearable\nMovement Data in Mental Health Research\", arXiv:2411.15240.")


def download(url: str, out: Path) -> None:
    """To ``out`` via a ``.part`` file, so an interrupted download never looks like a weight file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    # the URL is the maintainer's own --url argument (S310: any scheme urllib opens is theirs to choose)
    request = urllib.request.Request(url, headers={"User-Agent": "circadia-fetch-pat"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as f:  # noqa: S310
        shutil.copyfileobj(response, f, length=1 << 20)
    part.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="download URL, copied from the authors' README (none is built in)")
    parser.add_argument("--out", type=Path, required=True, help="where the .h5 file goes (or is, without --url)")
    parser.add_argument("--sha256", help="expected sha256 of the file; without it the file's sha256 is printed")
    parser.add_argument("--model-id", help="e.g. PAT-L-29k; checked against the size read from the file")
    parser.add_argument("--force", action="store_true", help="download even if --out exists")
    args = parser.parse_args(argv)
    print(SOURCE)
    print(ATTRIBUTION)

    downloaded = False
    if args.url:
        if args.out.exists() and not args.force:
            print(f"{args.out} exists; not downloading again (--force to overwrite)")
        else:
            print(f"downloading {args.url} -> {args.out}")
            download(args.url, args.out)
            downloaded = True
    elif not args.out.is_file():
        parser.error(f"{args.out} does not exist; pass --url to download it")

    digest = file_sha256(args.out)
    if args.sha256:
        if digest != args.sha256.strip().lower():
            print(f"sha256 MISMATCH: file {digest}, expected {args.sha256}", file=sys.stderr)
            if downloaded:
                args.out.unlink()
                print(f"removed {args.out}", file=sys.stderr)
            return 1
        print(f"sha256 verified: {digest}")
    else:
        print(f"sha256 (not verified, record it): {digest}")

    try:
        encoder = load_encoder(args.out, model_id=args.model_id)
    except PatWeightsError as exc:
        print(f"not a loadable PAT encoder: {exc}", file=sys.stderr)
        return 1
    print(f"model: {encoder.model_id} (patch {encoder.patch_size}, {encoder.num_patches} patches, "
          f"{encoder.num_heads} heads, {encoder.num_layers} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
