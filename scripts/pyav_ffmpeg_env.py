"""Let torchcodec load PyAV's wheel-bundled FFmpeg where the machine has no FFmpeg 4-8 shared libraries.

torchcodec's ``libtorchcodec_coreN.so`` asks the dynamic linker for ``libavcodec.so.62`` and the other
FFmpeg libraries by their plain names; PyAV's wheel ships FFmpeg 8 under ``site-packages/av.libs`` with
hashed names (``libavcodec-5e6b81c2.so.62.28.102``). This makes a folder of links under the plain names
(default ``~/.cache/avel/pyav-ffmpeg``) and prints the line that puts it, and ``av.libs`` itself (the
bundled libraries find each other there), on ``LD_LIBRARY_PATH``, read when a process starts:

    eval $(python scripts/pyav_ffmpeg_env.py)
    avel preprocess DATASET OUT.h5 --decoder torchcodec

Measured: torchcodec 0.13.0 (torch 2.14) with PyAV 18.1.0's FFmpeg 8 (BENCHMARKS.md, "Decoders").
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from avel.preprocessing.decoders import pyav_ffmpeg_libs

LIBS = ("avcodec", "avformat", "avutil", "avdevice", "avfilter", "swscale", "swresample")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "avel" / "pyav-ffmpeg")
    args = ap.parse_args()
    bundled = pyav_ffmpeg_libs()
    if bundled is None:
        raise SystemExit("error: PyAV has no bundled FFmpeg here (no av.libs/libavcodec-*.so*)")
    args.dir.mkdir(parents=True, exist_ok=True)
    for lib in LIBS:
        for f in bundled.glob(f"lib{lib}-*.so.*"):
            major = re.match(rf"lib{lib}-[0-9a-f]+\.so\.(\d+)", f.name)
            if major:
                link = args.dir / f"lib{lib}.so.{major.group(1)}"
                link.unlink(missing_ok=True)
                link.symlink_to(f)
    print(f"export LD_LIBRARY_PATH={args.dir}:{bundled}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}")


if __name__ == "__main__":
    main()
