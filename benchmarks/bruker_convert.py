"""Bruker conversion throughput and peak memory, run by hand:

    python benchmarks/bruker_convert.py [--slices 128] [--enhanced]

Writes a synthetic ParaVision 360 3D scan (256x256xN, int16) into a temporary
folder, converts it to MR Image Storage (one dataset at a time, as the CLI
does) and reports frames/s and the peak of Python allocations (tracemalloc).
The 2dseq is memory-mapped and read a slice at a time, so the peak should
stay within a few frames; for Enhanced MR the output itself (one multi-frame
dataset) is in memory and dominates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bruker.convert import datasets_for, iter_scans  # noqa: E402


def write_scan(study: Path, columns: int, rows: int, slices: int) -> None:
    recon = study / "1" / "pdata" / "1"
    recon.mkdir(parents=True)
    visu = f"""##TITLE=Parameter List, ParaVision 360.3.3
##JCAMPDX=4.24
##DATATYPE=Parameter Values
##ORIGIN=Bruker BioSpin MRI GmbH
##$VisuUid=( 65 )
<2.25.99887766>
##$VisuCoreFrameCount=1
##$VisuCoreDim=3
##$VisuCoreSize=( 3 )
{columns} {rows} {slices}
##$VisuCoreDimDesc=( 3 )
spatial spatial spatial
##$VisuCoreExtent=( 3 )
25.6 25.6 12.8
##$VisuCoreFrameThickness=( 1 )
12.8
##$VisuCoreOrientation=( 1, 9 )
1 0 0 0 1 0 0 0 1
##$VisuCorePosition=( 1, 3 )
-12.8 -12.8 -6.4
##$VisuCoreDataOffs=( 1 )
0
##$VisuCoreDataSlope=( 1 )
1.5
##$VisuCoreWordType=_16BIT_SGN_INT
##$VisuCoreByteOrder=littleEndian
##$VisuStudyUid=( 65 )
<2.25.11223344>
##$VisuSubjectId=( 65 )
<bench>
##$VisuAcqSequenceName=( 65 )
<FLASH3D>
##END=
"""
    (recon / "visu_pars").write_text(visu, encoding="latin-1")
    # Written slice by slice so the benchmark's own setup stays small too.
    with open(recon / "2dseq", "wb") as handle:
        for k in range(slices):
            handle.write((np.arange(rows * columns, dtype=np.int64) % 4096 + k).astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--enhanced", action="store_true")
    args = parser.parse_args()
    frame_bytes = args.size * args.size * 2
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        write_scan(study, args.size, args.size, args.slices)
        tracemalloc.start()
        start = time.perf_counter()
        frames = 0
        for _, ctx, error in iter_scans(study):
            assert ctx is not None, error
            for ds in datasets_for(ctx, args.enhanced):
                frames += int(getattr(ds, "NumberOfFrames", 1) or 1)
                del ds  # as the CLI does: write, then drop
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    iod = "Enhanced MR" if args.enhanced else "MR Image"
    print(f"{iod}: {frames} frames of {args.size}x{args.size} in {elapsed:.2f} s = {frames / elapsed:.1f} frames/s")
    print(
        f"peak traced memory: {peak / 2**20:.1f} MiB "
        f"({peak / frame_bytes:.1f} frames of {frame_bytes / 2**10:.0f} KiB; 2dseq is {args.slices * frame_bytes / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
