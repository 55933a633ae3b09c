"""Build the malformed-file corpus of test_malformed_corpus.py from valid seed objects.

Every case is bytes built here from a valid seed by cutting, patching or re-framing it,
so the corpus needs no files beyond the seeds and regenerates identically each run.
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.us_dicom import write_us_multiframe
from tests.synthetic_cases import make_cine, make_mr_volume, make_study

MIB = 1024**2
PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
STUDY = make_study(study_description="CORPUS")


def to_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def meta_end(data: bytes) -> int:
    """Offset of the first data set element: after (0002,0000) and the group it counts."""
    return 144 + struct.unpack_from("<I", data, 140)[0]


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same data set bytes under file meta that names ``uid`` (no validation)."""
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = UID(uid)
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return bytes(128) + b"DICM" + buffer.getvalue() + data[meta_end(data) :]


def element(group: int, number: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element, with an optional lying length."""
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
        return struct.pack("<HH2sHI", group, number, vr, 0, size) + value
    return struct.pack("<HH2sH", group, number, vr, size) + value


def item_start(length: int = 0xFFFFFFFF) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, length)


def edited(data: bytes, **attributes: object) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return to_bytes(dataset)


def with_element(data: bytes, group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """Replace the first short-length element (group, number) after the meta group, raw."""
    offset = data.index(struct.pack("<HH", group, number), meta_end(data))
    length = struct.unpack_from("<H", data, offset + 6)[0]
    return data[:offset] + element(group, number, vr, value) + data[offset + 8 + length :]


def deflate_bomb(header: bytes, zero_bytes: int) -> bytes:
    """A raw deflate stream of ``header`` then ``zero_bytes`` zeros (a multiple of 1 MiB).

    A compressed MiB of zeros after a full flush is independent of what precedes it, so
    repeating it builds a gigabyte-scale stream in milliseconds (about 1000:1).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    return head + block * (zero_bytes // MIB) + final


def deflated_meta(seed: bytes) -> bytes:
    """The seed's file meta group, naming the Deflated Explicit VR Little Endian syntax."""
    framed = with_transfer_syntax(seed, DeflatedExplicitVRLittleEndian)
    return framed[: meta_end(framed)]


def build_seeds(folder: Path) -> dict[str, bytes]:
    """Valid objects: pydicom's MR_small, a JPEG US cine, an Enhanced MR, a deflated MR."""
    mr = Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes()  # type: ignore[arg-type]
    cine = make_cine(STUDY, number_of_frames=20, rows=192, columns=256)
    us = write_us_multiframe(
        cine, STUDY, path=folder / "us.dcm", encoding="jpeg_baseline", uid_seed="corpus"
    ).read_bytes()
    pixels = np.arange(5 * 6 * 5, dtype=np.float32).reshape(5, 6, 5)
    volume = make_mr_volume(pixels, slice_spacing=2.0)
    enhanced = write_enhanced_mr_series(
        volume, STUDY, out_dir=folder / "enhanced", series_number=1, uid_seed="corpus"
    ).read_bytes()
    deflated = pydicom.dcmread(io.BytesIO(mr))
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.SOPInstanceUID = deflated.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.99")
    return {"mr": mr, "us": us, "enhanced": enhanced, "deflated": to_bytes(deflated)}


def truncations(name: str, data: bytes) -> dict[str, bytes]:
    """Cuts in the preamble, the meta group, mid-element, at and inside Pixel Data."""
    start = meta_end(data)
    pixel = data.rindex(PIXEL_DATA_TAG)
    uid = data.index(struct.pack("<HH", 0x0008, 0x0018))  # SOP Instance UID
    offsets = {
        "preamble": 100, "prefix": 130, "meta-group-length": 138, "meta-mid": start - 9,
        "meta-end": start, "first-element": start + 5, "uid-mid": uid + 12,
        "body-half": (start + pixel) // 2, "pixel-tag": pixel + 2, "pixel-length": pixel + 10,
        "pixel-start": pixel + 13, "pixel-mid": (pixel + len(data)) // 2,
        "last-byte": len(data) - 1,
    }  # fmt: skip
    return {f"truncated-{name}-{where}": data[:offset] for where, offset in offsets.items()}


def build_corpus(seeds: dict[str, bytes]) -> dict[str, bytes]:
    mr, us, enhanced = seeds["mr"], seeds["us"], seeds["enhanced"]
    corpus: dict[str, bytes] = {}
    for name in ("mr", "us", "enhanced"):
        corpus.update(truncations(name, seeds[name]))
    corpus["truncated-deflated-stream"] = seeds["deflated"][: meta_end(seeds["deflated"]) + 60]

    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner.dcm", mr)
    rng = np.random.default_rng(7)
    corpus |= {
        "text": b"Patient list exported 2024-01-01\n",
        "png": png.getvalue(),
        "empty": b"",
        "zero-bytes": bytes(1000),
        "random": rng.bytes(4096),
        "gzip-of-dicom": gzip.compress(mr),
        "zip-of-dicom": archive.getvalue(),
        "dicm-without-preamble": b"DICM" + mr[132:],
        "dicm-then-garbage": bytes(128) + b"DICM" + rng.bytes(2000),
        "dicm-then-nothing": bytes(128) + b"DICM",
    }

    start = meta_end(mr)
    pixel = mr.rindex(PIXEL_DATA_TAG)
    body_end_header = mr[:pixel]
    corpus |= {
        "wrong-vr-rows-text": with_element(mr, 0x0028, 0x0010, b"LO", b"abc "),
        "wrong-vr-frames-text": with_element(us, 0x0028, 0x0008, b"IS", b"many"),
        "wrong-vr-spacing-text": with_element(mr, 0x0028, 0x0030, b"DS", b"abc\\x "),
        "wrong-vr-uid-as-us": with_element(mr, 0x0008, 0x0018, b"US", b"\x01\x00"),
        "wrong-length-rows-3": body_end_header.replace(
            b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x10\x00US\x03\x00", 1
        )
        + mr[pixel:],
        "wrong-length-ul-2": mr[:start]
        + element(0x0008, 0x0000, b"UL", b"\x01\x00")
        + mr[start:],
        "uid-binary-garbage": with_element(mr, 0x0008, 0x0018, b"UI", b"\xff\xfe\x00\x01"),
    }  # fmt: skip

    absurd = struct.pack("<I", 0xFFFFFFF0)
    corpus |= {
        "absurd-length-header-ut": mr[:start] + element(0x0040, 0xA160, b"UT", b"x", 0xFFFFFFF0),
        "absurd-length-pixel-data": mr[: pixel + 8] + absurd + mr[pixel + 12 :],
        "absurd-length-meta-group": mr[:140] + absurd + mr[144:],
        "undefined-length-native-pixels": mr[: pixel + 8] + b"\xff\xff\xff\xff" + mr[pixel + 12 :],
        "absurd-length-pn-past-eof": mr[:start] + element(0x0010, 0x0010, b"PN", b"A^B", 0xFFFF),
    }

    small_header = mr[start:pixel]
    huge_pixels = element(0x7FE0, 0x0010, b"OB", b"", 8 * MIB)
    corpus |= {
        "deflate-bomb-over-small-limit": deflated_meta(mr)
        + deflate_bomb(small_header + huge_pixels, 8 * MIB),
        "deflate-corrupt-stream": deflated_meta(mr) + rng.bytes(3000),
        "deflate-stored-not-deflated": deflated_meta(mr) + mr[start:],
    }

    corpus |= {
        "missing-pixel-data-mr": edited(mr, PixelData=None),
        "missing-pixel-data-us": edited(us, PixelData=None),
        "pixel-data-short-mr": edited(
            mr, PixelData=pydicom.dcmread(io.BytesIO(mr)).PixelData[:100]
        ),
        "pixel-data-short-enhanced": edited(enhanced, PixelData=b"\x00" * 20),
        "pixel-data-jpeg-garbage": _with_garbage_fragments(us),
        "dims-absurd-frames": edited(us, NumberOfFrames=1_000_000),
        "dims-absurd-size": edited(mr, Rows=65535, Columns=65535, NumberOfFrames=900),
        "dims-zero-rows": edited(mr, Rows=0),
        "dims-bits-12": edited(mr, BitsAllocated=12),
        "dims-samples-4": edited(mr, SamplesPerPixel=4),
    }

    for name, uid in {
        "mpeg2": "1.2.840.10008.1.2.4.100",
        "mpeg4": "1.2.840.10008.1.2.4.102",
        "hevc": "1.2.840.10008.1.2.4.107",
        "unknown-uid": "1.2.3.4.5.6.7",
        "not-a-uid": "JPEG please",
    }.items():
        corpus[f"transfer-syntax-{name}"] = with_transfer_syntax(us, uid)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it is given a path as a UID
        corpus |= {
            "uid-path-sop-instance": edited(mr, SOPInstanceUID="../../etc/passwd"),
            "uid-path-study": edited(mr, StudyInstanceUID="/tmp/x"),
            "uid-path-series": edited(mr, SeriesInstanceUID="1.2.3/../../4"),
            "uid-too-long": edited(mr, SOPInstanceUID="1." + "2" * 70),
        }

    sequence = element(0x0008, 0x1140, b"SQ", b"", 0xFFFFFFFF)
    uid_element = element(0x0008, 0x1155, b"UI", b"1.2.3\x00")
    nested = (sequence + item_start()) * 3000
    corpus |= {
        "sequence-never-closed": mr[:start] + sequence + item_start() + uid_element,
        "sequence-item-never-closed": mr[:start] + sequence + item_start() + uid_element * 50,
        "sequence-nested-3000-deep": mr[:start] + nested,
        "sequence-item-absurd-length": mr[:start] + sequence + item_start(0xFFFFFFF0) + uid_element,
    }
    return corpus | families(seeds)


# Elements of MR_small whose VR or length the generated families corrupt, one case each.
CORRUPTED_ELEMENTS = {
    "SOPClassUID": (0x0008, 0x0016), "SOPInstanceUID": (0x0008, 0x0018),
    "Modality": (0x0008, 0x0060), "PatientID": (0x0010, 0x0020),
    "SliceThickness": (0x0018, 0x0050), "StudyInstanceUID": (0x0020, 0x000D),
    "SeriesInstanceUID": (0x0020, 0x000E), "InstanceNumber": (0x0020, 0x0013),
    "ImagePositionPatient": (0x0020, 0x0032), "ImageOrientationPatient": (0x0020, 0x0037),
    "SamplesPerPixel": (0x0028, 0x0002), "PhotometricInterpretation": (0x0028, 0x0004),
    "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "PixelSpacing": (0x0028, 0x0030),
    "BitsAllocated": (0x0028, 0x0100), "BitsStored": (0x0028, 0x0101),
    "PixelRepresentation": (0x0028, 0x0103),
}  # fmt: skip
META_ELEMENTS = {
    "MediaStorageSOPClassUID": (0x0002, 0x0002), "MediaStorageSOPInstanceUID": (0x0002, 0x0003),
    "TransferSyntaxUID": (0x0002, 0x0010), "ImplementationClassUID": (0x0002, 0x0012),
}  # fmt: skip
UNKNOWN_VRS = {"zz": b"ZZ", "nul": b"\x00\x00", "punct": b"q!"}
POLYGLOT_PREAMBLES = {
    "pe": b"MZ\x90\x00\x03" + bytes(55) + b"\x40\x00\x00\x00" + b"PE\x00\x00",  # e_lfanew 64
    "elf": b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00",
    "macho": b"\xcf\xfa\xed\xfe\x07\x00\x00\x01",
    "script": b"#!/bin/sh\necho polyglot\nexit 0\n",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x00\x00",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "html": b"<HTML><script>alert(1)</script>",
}
PATH_LIKE_UIDS = {
    "dotdot": "..", "parent": "../x", "absolute": "/etc/passwd", "embedded": "1.2.3/../..",
    "windows": "C:\\Windows\\x", "backslash": "1.2.3\\..\\4", "encoded": "%2e%2e%2f1.2",
}  # fmt: skip


def families(seeds: dict[str, bytes]) -> dict[str, bytes]:
    """Systematic families over the seeds: unknown VRs, lengths past the end, polyglots,
    short pixel data and path-like UIDs (named ``FAMILY-WHERE-VARIANT``)."""
    mr = seeds["mr"]
    cases: dict[str, bytes] = {}
    for keyword, (group, number) in (CORRUPTED_ELEMENTS | META_ELEMENTS).items():
        where = "meta" if group == 0x0002 else "body"
        offset = _element_offset(mr, group, number, in_meta=where == "meta")
        for variant, vr in UNKNOWN_VRS.items():
            cases[f"vr-{where}-{keyword}-{variant}"] = mr[: offset + 4] + vr + mr[offset + 6 :]
        if where == "body":  # the whole file is shorter than 64 KiB: the value runs past it
            cases[f"length-past-end-{keyword}"] = mr[: offset + 6] + b"\xff\xff" + mr[offset + 8 :]
    for seed_name in ("mr", "us", "enhanced"):
        body = seeds[seed_name][128:]
        for kind, header in POLYGLOT_PREAMBLES.items():
            preamble = header + bytes(128 - len(header))
            cases[f"polyglot-{kind}-{seed_name}"] = preamble + body
    for seed_name in ("mr", "enhanced"):
        pixels = pydicom.dcmread(io.BytesIO(seeds[seed_name])).PixelData
        for variant, kept in {
            "half": pixels[: len(pixels) // 2],
            "quarter": pixels[: len(pixels) // 4],
            "two-bytes": pixels[:2],
            "empty": b"",
        }.items():
            cases[f"pixel-size-{seed_name}-{variant}"] = edited(seeds[seed_name], PixelData=kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it is given a path as a UID
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            for variant, value in PATH_LIKE_UIDS.items():
                cases[f"uid-path-{keyword}-{variant}"] = edited(mr, **{keyword: value})
    return cases


def _element_offset(data: bytes, group: int, number: int, *, in_meta: bool) -> int:
    """Where element (group, number) starts, in the meta group or after it."""
    tag = struct.pack("<HH", group, number)
    return data.index(tag, 132) if in_meta else data.index(tag, meta_end(data))


def _with_garbage_fragments(us: bytes) -> bytes:
    from pydicom.encaps import encapsulate

    frames = int(pydicom.dcmread(io.BytesIO(us), stop_before_pixels=True).NumberOfFrames)
    return edited(us, PixelData=encapsulate([b"\xff\xd8 not a jpeg"] * frames))


def main() -> None:
    """Write the corpus to a folder: ``python -m tests.imaging.malformed_corpus OUT``."""
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "malformed-corpus")
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = build_seeds(out / "seeds")
        cases = build_corpus(seeds)
    for name, data in cases.items():
        (out / f"{name}.dcm").write_bytes(data)
    print(f"{len(cases)} malformed cases and {len(seeds)} valid seeds written to {out}")


if __name__ == "__main__":
    main()
