"""Console command `advpipe`: small helpers around the workflow (the workflow itself is `snakemake`).

Exit status: 0 done, 2 the input is wrong (one line says which file or key), 1 an error inside advpipe.
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml

from advpipe.errors import DEBUG_VAR, InputError, debugging, report


def _check_config(args: argparse.Namespace) -> int:
    from advpipe.config import check_before_jobs, load

    cfg = load(args.path)
    check_before_jobs(cfg)
    if args.show:
        print(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.path}: valid")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from advpipe.models import load_trained
    from advpipe.models.checkpoint import read_spec

    model = load_trained(args.model_dir)
    spec = read_spec(args.model_dir)
    spec["parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(spec, indent=2))
    return 0


def _import_checkpoint(args: argparse.Namespace) -> int:
    from advpipe.models.wwoods import import_checkpoint

    model = import_checkpoint(args.src, args.dest_dir)
    print(f"{args.dest_dir}: imported {args.src} as preact_resnet depth {model.depth}, width {model.width}, "
          f"activation {model.activation}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advpipe", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_VAR}=1); by default one line names "
                             "the cause and the file or config key")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-config", help="validate a config file (defaults filled in from the schema)")
    p.add_argument("path")
    p.add_argument("--show", action="store_true", help="print the config with defaults filled in")
    p.set_defaults(func=_check_config)
    p = sub.add_parser("model-info", help="load a trained-model folder safely and print what it holds")
    p.add_argument("model_dir")
    p.set_defaults(func=_model_info)
    p = sub.add_parser("import-checkpoint", help="convert a published checkpoint into a trained-model folder "
                       "(no pickled code runs)")
    p.add_argument("source_format", choices=["wwoods"],
                   help="wwoods: a .pt of wwoods/adversarial-explanations-cifar (ResNet-44 family)")
    p.add_argument("src", help="the .pt file")
    p.add_argument("dest_dir", help="folder to write model.pt and model.json into")
    p.set_defaults(func=_import_checkpoint)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - every error becomes one line (or a traceback with --debug)
        report(err, debug=args.debug or debugging())
        return 2 if isinstance(err, (InputError, OSError)) else 1


if __name__ == "__main__":
    sys.exit(main())
