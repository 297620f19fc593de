"""``mgmrn export``: a checkpoint as a Hub model folder or as an ONNX graph."""

from __future__ import annotations

import argparse

from mgmrn.commands import add_checkpoint_argument

HELP = "share a checkpoint: a Hugging Face Hub model folder, or an ONNX graph"
DESCRIPTION = (
    "--format hub writes model.safetensors, config.json and a README.md model card into --out "
    "(a folder), which mgmrn loads as local-dir:DIR or, once pushed with --push org/name, as "
    "hf-hub:org/name. --format onnx writes an ONNX graph (--out model.onnx) whose inputs are "
    "images and a class-attribute matrix, and a JSON sidecar (model.json) with the class names, "
    "preprocessing and calibration; it needs pip install 'mgmrn[export]'.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("hub", "onnx"), dest="format",
                        help="hub: a model folder in the Hub's format; onnx: an ONNX graph")
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True,
                        help="hub: the folder to write; onnx: the .onnx file to write")
    parser.add_argument("--push", metavar="ORG/NAME", default=None,
                        help="hub: also upload the folder to this Hub repository (log in first: "
                             "hf auth login)")
    parser.add_argument("--private", action="store_true",
                        help="hub: create the pushed repository private")
    parser.add_argument("--results", metavar="JSON", default=None,
                        help="hub: the results.json for the model card (default: the run's, "
                             "next to the checkpoint or in its run folder)")
    parser.add_argument("--opset", type=int, default=18, help="onnx: the opset (default 18)")


def run(args: argparse.Namespace) -> int:
    from mgmrn.errors import UsageError

    if args.format == "onnx":
        if args.push or args.results or args.private:
            raise UsageError("--push, --private and --results apply to --format hub only")
        from mgmrn.export.onnx import export_onnx

        graph, sidecar = export_onnx(args.checkpoint, args.out, args.opset)
        print(f"wrote {graph} and {sidecar}")
        return 0
    from mgmrn.export.hub import export_hub

    folder = export_hub(args.checkpoint, args.out, args.results, args.push, args.private)
    print(f"wrote {folder}" + (f" and pushed it to hf-hub:{args.push}" if args.push else ""))
    return 0
