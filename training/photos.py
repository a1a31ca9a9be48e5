"""``photos``: natural colour photos cut into seeded square crops, an unlabelled set for the
colour pretexts (colorization, split-brain).

Sources
  ``photos``: the default set, the image files of these packages where installed, found by path:
  scikit-image's ``skimage/data`` folder (located with ``importlib``, not imported), and the
  Debian packages in ``DEBIAN_SOURCES`` (each package's own files, read from dpkg's file list
  ``/var/lib/dpkg/info/<package>.list``, under the package's image folder): opencv-doc
  (``examples/``: ``data/``, ``text/``, ``hfs/``, ...), plasma-workspace-wallpapers,
  mate-backgrounds, ukui-wallpapers, gnome-backgrounds.
  ``photos:PATH``: every file under PATH, recursively, whose extension is an image's
  (``IMAGE_EXTENSIONS``).

Rules, the first that applies names the reason (1-5 need the header, names and bytes only; the
full decode, where 1 is checked again, comes after 5); every file left out is listed in the
manifest with its rule and reason, and bad files are also named on stderr, one line each:
  1. ``bad file``: the header or the decode fails (``zoo._images.read_image``: not an image,
     truncated, empty, unreadable, ...).
  2. ``huge``: more than ``MAX_MEGAPIXELS`` (80) megapixels by its header; not decoded.
  3. ``too small``: short side below the crop size (crops are never enlarged).
  4. ``duplicate``: a symbolic link to another candidate (KDE's resolutions are links to one
     file); in one folder, files whose names differ only by a ``WxH`` token are one photo
     at several resolutions (KDE's ``contents/images/1920x1080.jpg``, MATE's
     ``Elephants_3840x2160.jpg``): the one with the most pixels is kept; a KDE wallpaper
     package's ``contents/screenshot.*`` beside ``contents/images/`` is its preview; a file with
     the same bytes as an earlier one is a copy.
  5. ``deny-list`` (default set only): ``DENY``, drawings, renders, paintings and other digital
     art, by file name per package. No statistic separates them from the photos here: the
     flattest photo (scikit-image's rocket.jpg, a night sky) has a flat share of 0.61 while
     MATE's Elephants.jpg (a painting) has 0.02 and GNOME's licorice/grid/wood renders 0.04-0.19;
     the least colourful photo kept (opencv's aero3.jpg) has mean chroma 4.1 while most of the
     art is far more colourful. So the art of these package versions is listed by name, and the
     two statistics below catch the rest (and guard ``photos:PATH``).
  6. ``near-gray``: mean CIE chroma C*ab = sqrt(a*^2 + b*^2) (sRGB, D65, ``zoo._colour``) over the
     stats thumbnail (longer side ``STATS_SIDE`` = 256 px, bilinear) below ``NEAR_GRAY_CHROMA``
     = 4.0 (a just-noticeable colour difference is about 2.3): gray scans, masks, near-black
     frames. Here the gray images measure 0-3.7, the least colourful photo kept 4.1.
  7. ``flat``: more than ``FLAT_SHARE`` = 65 % of the thumbnail's pixels are flat (L* differs from
     the right and lower neighbour by less than ``FLAT_STEP`` = 0.5): logos, masks, charts, vector
     art, renders with large single-colour fills (0.83-0.93 here), not photos (at most 0.61).

Split: by photo, never by crop, and near-duplicates together: photos whose colour histograms
(8 x 8 x 8 RGB bins over the stats thumbnail) have a Bhattacharyya coefficient of at least
``NEAR_DUPLICATE_BC`` = 0.875 are one group (chained), and a group goes to one side. Measured on
the default set: the pairs of one scene (opencv's stereo pairs aloeL/R and left/right, the flow
pair rubberwhale1/2, leuvenA/B's exposure change, graf1/3's viewpoint change, ela_original and its
edited copy, scikit-image's motorcycle_left/right) have 0.90-1.00, the overlapping aerial shots
aero1/aero3 0.88, unrelated photos at most 0.85 (thumbnail correlation, tried first, could not
tell them apart). Groups are shuffled with the seed; whole groups go to test while they fit in
``test_share`` (10 %) of the photos (if none fits, the smallest group), train keeps at least one.

Crops: ``crops_per_photo`` square crops per photo, each with its own side, uniform in
[``min_scale``, ``max_scale``] x the photo's short side (at least the crop size: never enlarged),
at a uniform position, resized (PIL bilinear, antialiased) to ``size`` x ``size`` RGB; the random
numbers come from the seed and the photo's path, so a photo's crops do not depend on the others.
A split's crops are interleaved (crop 0 of every photo, then crop 1, ...), so ``subset(n)``
covers all of its photos.

Cache: one uint8 safetensors file (``train``, ``test``, and ``train_photo`` / ``test_photo``:
each crop's index into the manifest's photos) and ``manifest.json`` beside it (every photo with
its package, licence, split, size and statistics; every excluded file with its rule and reason;
parameters and counts), under ``$SSLZOO_DATA/photos/`` (default ``~/.cache/sslzoo/data/photos``,
the data folder Fashion-MNIST downloads go to; ``$SSLZOO_CACHE`` is the feature cache, whose
size limit evicts files). The folder's name holds a key of the source list (path, size and
mtime of every candidate file), the parameters and the rules; both files are written
atomically, and an older build for the same sources is removed once a new one is written.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sslzoo.zoo._hub import atomic_write, atomic_write_text
from sslzoo.zoo._images import IMAGE_EXTENSIONS, ImageError, convert_mode, read_image
from sslzoo.zoo._transforms import convert_channels

from .data import DataError, ImageSet, default_data_dir

FORMAT = 1  # bump when the cached crops' meaning changes
MAX_MEGAPIXELS = 80
STATS_SIDE = 256
NEAR_GRAY_CHROMA = 4.0
FLAT_STEP, FLAT_SHARE = 0.5, 0.65
NEAR_DUPLICATE_BC = 0.875
_BINS = 8  # per RGB channel, for the near-duplicate histograms
CROPS_FILE, MANIFEST_FILE = "crops.safetensors", "manifest.json"

# Debian packages of the default set: (package, the folder its images are under).
DEBIAN_SOURCES = (
    ("opencv-doc", "/usr/share/doc/opencv-doc/examples/"),
    ("plasma-workspace-wallpapers", "/usr/share/wallpapers/"),
    ("mate-backgrounds", "/usr/share/backgrounds/mate/"),
    ("ukui-wallpapers", "/usr/share/backgrounds/"),
    ("gnome-backgrounds", "/usr/share/backgrounds/gnome/"),
)
DPKG_INFO = Path("/var/lib/dpkg/info")
SKIMAGE = "scikit-image"

_PLASMA_ART = ("Altai", "Autumn", "Canopee", "Cascade", "Cluster", "DarkestHour", "Elarun", "Flow", "FlyingKonqui",
               "Honeywave", "IceCold", "Kay", "Kokkini", "MilkyWay", "Opal", "PastelHills", "Patak", "SafeLanding",
               "Shell", "Volna")
# package -> ((glob on the path relative to the package's image folder, why), ...). Checked by eye
# against Debian 12's versions (opencv-doc 4.6.0, plasma-workspace-wallpapers 5.27.5,
# mate-backgrounds 1.26.0, ukui-wallpapers 20.04.3, gnome-backgrounds 43.1; scikit-image 0.26).
# plasma's ColdRipple and Grey are photos, but gray (rule 6); their other 8 wallpapers are photos.
DENY: dict[str, tuple[tuple[str, str], ...]] = {
    "plasma-workspace-wallpapers": tuple((f"{w}/*", "digital art (KDE wallpaper: render or illustration)")
                                         for w in _PLASMA_ART),
    "mate-backgrounds": (("abstract/*", "digital art (MATE's abstract/ wallpapers)"),
                         ("desktop/*", "digital art (MATE's desktop/ wallpapers)")),  # nature/: the photos
    "ukui-wallpapers": tuple((f"{n}.*", "digital art (UKUI wallpaper: illustration or render)") for n in (
        "2004default", "calla", "city", "desert", "firstgeneration", "fluent-color", "focal-ubuntukylin",
        "goldfish", "rhythm", "rollpaper", "string", "the-mouse")),
    # GNOME 43's set is renders and illustrations; older releases' photos (Godafoss_Iceland.jpg, ...) are kept
    "gnome-backgrounds": tuple((f"{n}-*", "digital art (GNOME 43 wallpaper: render or illustration)") for n in (
        "adwaita", "blobs", "drool", "dune", "field", "grid", "licorice", "pixels", "symbolic", "truchet", "vnc",
        "wood")),
    "opencv-doc": (("data/pic2.png", "synthetic test pattern"), ("data/pic4.png", "synthetic test pattern"),
                   ("data/HappyFish.jpg", "cartoon"), ("data/WindowsLogo.jpg", "logo"),
                   ("data/ml.png", "cartoon"), ("data/starry_night.jpg", "painting"),
                   ("data/smarties.png", "3D render"), ("fuzzy/input.png", "drawing"),
                   ("ximgproc/stanford.png", "map screenshot")),
    SKIMAGE: (("color.png", "synthetic colour wheel"), ("logo.png", "logo")),
}

_WXH = re.compile(r"[_-]?\d{2,5}x\d{2,5}")
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass(frozen=True)
class PhotoParams:
    """How the crops are cut and split (all of it is part of the cache key)."""

    size: int = 128  # crops are size x size RGB
    crops_per_photo: int = 64
    min_scale: float = 0.2  # crop side as a share of the photo's short side
    max_scale: float = 1.0
    test_share: float = 0.1  # of the photos (by near-duplicate group)
    seed: int = 0


@dataclass
class Source:
    """One candidate file: its path, the package it comes from (None: the user's folder), its
    image folder (``DENY`` globs are relative to it) and its licence."""

    path: str
    package: str | None = None
    root: str | None = None
    licence: str | None = None
    licence_from: str | None = None


@dataclass
class _Examined:
    """What rule checking found out about one source."""

    source: Source
    rule: str | None = None  # None: a photo
    reason: str = ""
    size: tuple[int, int] = (0, 0)
    chroma: float = 0.0
    flat: float = 0.0
    hist: np.ndarray | None = field(default=None, repr=False)  # sqrt of the normalised colour histogram
    crops: np.ndarray | None = field(default=None, repr=False)  # n x 3 x s x s uint8


# --- sources -------------------------------------------------------------------------------------

def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def skimage_data_dir() -> Path | None:
    """scikit-image's data folder, found without importing it; None when not installed."""
    try:
        spec = importlib.util.find_spec("skimage")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / "data").is_dir():
            return Path(loc) / "data"
    return None


def _dpkg_files(package: str) -> list[str] | None:
    """The files dpkg lists for ``package`` (None: not installed)."""
    for name in (f"{package}.list", *sorted(p.name for p in DPKG_INFO.glob(f"{package}:*.list"))):
        try:
            return (DPKG_INFO / name).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except OSError:
            continue
    return None


def default_sources() -> list[Source]:
    """The default set's candidate files (installed packages only), sorted by path."""
    out: list[Source] = []
    data = skimage_data_dir()
    if data is not None:
        lic = _skimage_licence()
        out += [Source(str(p), SKIMAGE, str(data), *lic) for p in sorted(data.iterdir())
                if _is_image_name(p.name) and p.is_file()]
    for package, root in DEBIAN_SOURCES:
        files = _dpkg_files(package)
        if not files:
            continue
        copyright_file = Path("/usr/share/doc") / package / "copyright"
        for f in sorted(files):
            if f.startswith(root) and _is_image_name(f) and os.path.isfile(f):
                out.append(Source(f, package, root, *debian_licence(copyright_file, f)))
    return sorted(out, key=lambda s: s.path)


def folder_sources(path: str | Path) -> list[Source]:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (photos:PATH wants a folder of images, searched recursively)")
    return [Source(str(p), None, str(root), "unknown (the user's files)", None)
            for p in sorted(root.rglob("*")) if _is_image_name(p.name) and p.is_file()]


# --- licences ------------------------------------------------------------------------------------

def _dep5_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        stanzas.append(fields)
    return stanzas


def debian_licence(copyright_file: Path, path: str) -> tuple[str, str]:
    """(licence, where it was read) for an installed file: from a machine-readable (DEP-5)
    copyright file, the License of the last Files stanza whose pattern matches the path's tail
    (DEP-5 patterns name the source tree, not the installed paths: best effort); otherwise a
    pointer to the free-form file."""
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown (no copyright file)", str(copyright_file)
    if not text.lstrip().startswith("Format:"):
        return f"see {copyright_file} (not machine-readable)", str(copyright_file)
    best = None
    for st in _dep5_stanzas(text):
        if "Files" not in st or "License" not in st:
            continue
        for pat in st["Files"].split():
            if pat == "*" or fnmatch.fnmatchcase(path, "*/" + pat):
                best = (st["License"].splitlines()[0].strip(), f"{copyright_file} (Files: {pat})")
                break
    return best or ("unknown (no Files stanza matches)", str(copyright_file))


def _skimage_licence() -> tuple[str, str]:
    try:
        meta = importlib.metadata.metadata(SKIMAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown", "scikit-image (no package metadata)"
    where = f"{SKIMAGE} {meta.get('Version', '?')} package metadata"
    if meta.get("License-Expression"):
        return meta["License-Expression"], where + " (License-Expression)"
    text = meta.get("License") or ""
    m = re.search(r"Files:\s*\*\s*\n.*?License:\s*(\S+)", text, re.S) or re.search(r"License:\s*(\S+)", text)
    if m:
        return m.group(1), where + " (License, Files: *)"
    if text.strip() and "\n" not in text.strip():
        return text.strip(), where + " (License)"
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return (", ".join(classifiers) or "unknown"), where + " (classifiers)"


# --- rules ---------------------------------------------------------------------------------------

def _denied(s: Source) -> str | None:
    if s.package not in DENY or s.root is None:
        return None
    rel = os.path.relpath(s.path, s.root)
    for pattern, why in DENY[s.package]:
        if fnmatch.fnmatchcase(rel, pattern):
            return f"{why} [{s.package}: {pattern}]"
    return None


def _header(path: str) -> tuple[int, int] | str:
    """(width, height) from the header, or why it cannot be read (then ``read_image`` names it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.size
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        return f"huge ({int(pixels.group(1)) / 1e6:.0f} megapixels > {MAX_MEGAPIXELS}; not decoded)" if pixels else \
            f"huge (> {MAX_MEGAPIXELS} megapixels; not decoded)"
    except Exception:  # noqa: BLE001 - read_image gives the reason
        try:
            read_image(path)
        except ImageError as e:
            return e.reason
        return "unreadable header"


def _variant_key(path: str) -> tuple[str, str]:
    """Files with the same key are one photo at several resolutions (when one name has a WxH token)."""
    p = Path(path)
    return str(p.parent), _WXH.sub("", p.stem)


def _kde_preview(path: str) -> bool:
    p = Path(path)
    return p.stem == "screenshot" and p.parent.name == "contents" and (p.parent / "images").is_dir()


def image_stats(rgb: Image.Image) -> tuple[float, float, np.ndarray]:
    """(mean C*ab, flat share, sqrt of the normalised 8 x 8 x 8 RGB histogram) of an RGB image
    (rules 6 and 7, and the near-duplicate test), measured on its thumbnail of longer side
    ``STATS_SIDE``."""
    from sslzoo.zoo._colour import rgb_to_lab

    w, h = rgb.size
    k = STATS_SIDE / max(w, h)
    thumb = rgb.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR) if k < 1 else rgb
    x = torch.from_numpy(np.array(thumb, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    lab = rgb_to_lab(x)[0]
    chroma = float(lab[1:].pow(2).sum(0).sqrt().mean())
    L = lab[0]
    if L.shape[0] > 1 and L.shape[1] > 1:
        step = torch.maximum((L[:-1, 1:] - L[:-1, :-1]).abs(), (L[1:, :-1] - L[:-1, :-1]).abs())
        flat = float((step < FLAT_STEP).float().mean())
    else:
        flat = 1.0
    q = np.asarray(thumb, dtype=np.uint8).reshape(-1, 3).astype(np.int64) * _BINS // 256
    hist = np.bincount((q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2], minlength=_BINS ** 3).astype(np.float32)
    return chroma, flat, np.sqrt(hist / hist.sum())


def cut_crops(rgb: Image.Image, params: PhotoParams, rng: np.random.Generator) -> np.ndarray:
    """``crops_per_photo`` random square crops of ``rgb`` -> n x 3 x size x size uint8."""
    w, h = rgb.size
    short, size, n = min(w, h), params.size, params.crops_per_photo
    lo = min(short, max(size, round(params.min_scale * short)))
    hi = min(short, max(lo, round(params.max_scale * short)))
    sides = rng.integers(lo, hi + 1, n)
    xs = rng.integers(0, w - sides + 1)
    ys = rng.integers(0, h - sides + 1)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, (x, y, s) in enumerate(zip(xs.tolist(), ys.tolist(), sides.tolist())):
        out[i] = np.asarray(rgb.resize((size, size), Image.BILINEAR, box=(x, y, x + s, y + s)))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _photo_rng(params: PhotoParams, path: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{params.seed}\0{path}".encode("utf-8", "surrogateescape")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _examine(e: _Examined, params: PhotoParams) -> _Examined:
    """Decode, measure (rules 1, 6, 7) and, for a photo, cut its crops. Runs in a worker thread."""
    try:
        rgb = convert_mode(read_image(e.source.path).image, "RGB")
    except ImageError as err:
        e.rule, e.reason = "bad file", err.reason
        return e
    except Exception as err:  # noqa: BLE001 - a conversion PIL cannot do
        e.rule, e.reason = "bad file", f"cannot convert to RGB ({type(err).__name__}: {err})"
        return e
    e.size = rgb.size
    e.chroma, e.flat, e.hist = image_stats(rgb)
    if e.chroma < NEAR_GRAY_CHROMA:
        e.rule, e.reason = "near-gray", f"mean chroma C*ab {e.chroma:.2f} < {NEAR_GRAY_CHROMA}"
    elif e.flat > FLAT_SHARE:
        e.rule, e.reason = "flat", f"{100 * e.flat:.0f}% flat pixels > {100 * FLAT_SHARE:.0f}%"
    else:
        e.crops = cut_crops(rgb, params, _photo_rng(params, e.source.path))
    return e


def _screen(sources: list[Source], params: PhotoParams, use_deny: bool) -> list[_Examined]:
    """Rules 2-5 (header, names, bytes): no decoding."""
    items = [_Examined(s) for s in sources]
    for e in items:
        hdr = _header(e.source.path)
        if isinstance(hdr, str):
            e.rule, e.reason = ("huge" if hdr.startswith("huge") else "bad file"), hdr
            continue
        e.size = hdr
        w, h = hdr
        if w * h > MAX_MEGAPIXELS * 1_000_000:
            e.rule, e.reason = "huge", f"huge ({w} x {h} = {w * h / 1e6:.0f} megapixels > {MAX_MEGAPIXELS}; not decoded)"
        elif min(w, h) < params.size:
            e.rule, e.reason = "too small", f"{w} x {h}: short side < the crop size {params.size}"
    live = [e for e in items if e.rule is None]
    real = {os.path.realpath(e.source.path): e for e in live if os.path.realpath(e.source.path) == e.source.path}
    for e in live:
        target = os.path.realpath(e.source.path)
        if target != e.source.path:
            first = real.setdefault(target, e)  # a link to a file that is not a candidate itself: the first link
            if first is not e:
                e.rule, e.reason = "duplicate", f"symbolic link to {first.source.path}"
    live = [e for e in live if e.rule is None]
    variants: dict[tuple[str, str], list[_Examined]] = {}
    for e in live:
        variants.setdefault(_variant_key(e.source.path), []).append(e)
    for group in variants.values():
        if len(group) < 2 or not any(_WXH.search(Path(v.source.path).stem) for v in group):
            continue
        best = max(group, key=lambda v: (v.size[0] * v.size[1], v.source.path))
        for e in group:
            if e is not best:
                e.rule, e.reason = "duplicate", f"resolution variant of {best.source.path}"
    for e in live:
        if e.rule is None and _kde_preview(e.source.path):
            e.rule, e.reason = "duplicate", f"preview of the wallpaper in {Path(e.source.path).parent / 'images'}"
    if use_deny:
        for e in live:
            why = _denied(e.source) if e.rule is None else None
            if why:
                e.rule, e.reason = "deny-list", why
    seen: dict[str, str] = {}
    for e in live:
        if e.rule is None:
            digest = _file_digest(e.source.path)
            if digest in seen:
                e.rule, e.reason = "duplicate", f"same bytes as {seen[digest]}"
            elif digest:
                seen[digest] = e.source.path
    return items


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def near_duplicate_groups(hists: np.ndarray, threshold: float = NEAR_DUPLICATE_BC) -> list[int]:
    """Group id per photo: the union of the pairs whose histograms (rows: square roots of
    normalised histograms) have a Bhattacharyya coefficient >= ``threshold``."""
    n = len(hists)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    t = torch.from_numpy(hists.astype(np.float32))
    for start in range(0, n, 1024):
        c = t[start:start + 1024] @ t.T
        for i, j in torch.nonzero(c >= threshold).tolist():
            a, b = find(start + i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def split_photos(groups: list[int], test_share: float, seed: int) -> list[str]:
    """"train" / "test" per photo (``groups``: a group id per photo): whole groups, shuffled with
    ``seed``, go to test while they fit in ``test_share`` of the photos; when none fits, the
    smallest group does. Train keeps at least one group."""
    n = len(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if len(members) < 2:
        raise DataError(f"{n} photo(s) in {len(members)} near-duplicate group(s) cannot be split into train and test "
                        "by photo; add photos")
    order = sorted(members.values())
    perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
    target = max(1, round(test_share * n))
    chosen, in_test = [], 0
    for k in perm:
        if in_test + len(order[k]) <= target:
            chosen.append(k)
            in_test += len(order[k])
    if not chosen:  # every group is larger than the share: the smallest (the first such in shuffled order)
        chosen = [min(perm, key=lambda k: len(order[k]))]
    out = ["train"] * n
    for k in chosen:
        for i in order[k]:
            out[i] = "test"
    return out


# --- cache ---------------------------------------------------------------------------------------

def cache_root() -> Path:
    return default_data_dir() / "photos"


def _rules() -> dict:
    return {"max_megapixels": MAX_MEGAPIXELS, "stats_side": STATS_SIDE, "near_gray_chroma": NEAR_GRAY_CHROMA,
            "flat_step": FLAT_STEP, "flat_share": FLAT_SHARE, "near_duplicate_bc": NEAR_DUPLICATE_BC,
            "deny": {k: [p for p, _ in v] for k, v in DENY.items()}}


def cache_key(sources: list[Source], params: PhotoParams, use_deny: bool) -> str:
    listing = []
    for s in sources:
        try:
            st = os.stat(s.path)
            listing.append((s.path, st.st_size, st.st_mtime_ns))
        except OSError:
            listing.append((s.path, -1, -1))
    blob = json.dumps({"format": FORMAT, "params": asdict(params), "rules": _rules() if use_deny else
                       {k: v for k, v in _rules().items() if k != "deny"}, "sources": listing}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "photos"


def _load_cached(folder: Path, key: str) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or manifest.get("format") != FORMAT or not (folder / CROPS_FILE).is_file():
        return None
    return manifest


def build(sources: list[Source], params: PhotoParams, *, name: str, use_deny: bool, log: Log = _stderr,
          workers: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Apply the rules, split, cut the crops: (tensors, manifest). Bad files are logged, one line each."""
    t0 = time.perf_counter()
    items = _screen(sources, params, use_deny)
    todo = [e for e in items if e.rule is None]
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda e: _examine(e, params), todo))
    for e in items:
        if e.rule == "bad file":
            log(f"photos: skipped {e.source.path}: {e.reason}")
    photos = [e for e in items if e.rule is None]
    if not photos:
        counts = _rule_counts(items)
        raise DataError(f"{name}: no usable photos among {len(items)} image file(s)"
                        + (f" ({', '.join(f'{k}: {v}' for k, v in counts.items())})" if counts else ""))
    groups = near_duplicate_groups(np.stack([e.hist for e in photos]))
    try:
        splits = split_photos(groups, params.test_share, params.seed)
    except DataError as err:
        raise DataError(f"{name}: {err}") from None
    tensors: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        idx = [i for i, s in enumerate(splits) if s == split]
        out = torch.empty((len(idx) * params.crops_per_photo, 3, params.size, params.size), dtype=torch.uint8)
        for j, i in enumerate(idx):  # interleaved: crop c of the j-th photo at c * len(idx) + j
            out[j::len(idx)] = torch.from_numpy(photos[i].crops)
            photos[i].crops = None  # one copy of the crops in memory at a time
        tensors[split] = out
        tensors[f"{split}_photo"] = torch.tensor(idx, dtype=torch.int32).repeat(params.crops_per_photo)
    group_ids = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    manifest = {
        "format": FORMAT, "name": name, "params": asdict(params), "rules": _rules() if use_deny else
        {k: v for k, v in _rules().items() if k != "deny"},
        "counts": {"candidates": len(items), "photos": len(photos),
                   "train_photos": splits.count("train"), "test_photos": splits.count("test"),
                   "train_crops": int(tensors["train"].shape[0]), "test_crops": int(tensors["test"].shape[0]),
                   "excluded": _rule_counts(items)},
        "photos": [{"path": e.source.path, "package": e.source.package, "licence": e.source.licence,
                    "licence_from": e.source.licence_from, "split": s, "group": group_ids[g],
                    "width": e.size[0], "height": e.size[1], "mean_chroma": round(e.chroma, 2),
                    "flat_share": round(e.flat, 3)} for e, s, g in zip(photos, splits, groups)],
        "excluded": [{"path": e.source.path, "package": e.source.package, "licence": e.source.licence,
                      "rule": e.rule, "reason": e.reason,
                      **({"mean_chroma": round(e.chroma, 2), "flat_share": round(e.flat, 3)}
                         if e.rule in ("near-gray", "flat") else {})} for e in items if e.rule is not None],
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    return tensors, manifest


def _rule_counts(items: list[_Examined]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in items:
        if e.rule:
            counts[e.rule] = counts.get(e.rule, 0) + 1
    return counts


def photo_set(path: str | Path | None = None, params: PhotoParams | None = None, *,
              cache_dir: str | Path | None = None, log: Log = _stderr) -> Path:
    """Build (once) and return the cache folder of a photo set: the default set (``path`` None)
    or every image under ``path``. The folder holds ``crops.safetensors`` and ``manifest.json``."""
    from safetensors.torch import save_file

    params = params or PhotoParams()
    if params.size < 1 or params.crops_per_photo < 1 or not 0 < params.min_scale <= params.max_scale <= 1 \
            or not 0 < params.test_share < 1:
        raise DataError(f"photos: bad parameters {params}")
    use_deny = path is None
    if path is None:
        sources, name, tag = default_sources(), "photos", "default"
        if not sources:
            raise DataError("photos: none of the default set's sources is installed (scikit-image, or "
                            f"apt-get install {' '.join(p for p, _ in DEBIAN_SOURCES)}); or use photos:PATH")
    else:
        root = Path(path).expanduser().resolve()
        sources, name, tag = folder_sources(root), f"photos:{root}", _slug(str(root))
        if not sources:
            raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under it")
    key = cache_key(sources, params, use_deny)
    base = Path(cache_dir).expanduser() if cache_dir else cache_root()
    folder = base / f"{tag}-{key}"
    if _load_cached(folder, key) is not None:
        return folder
    log(f"{name}: cutting crops of {len(sources)} candidate file(s) into {folder} (once)")
    tensors, manifest = build(sources, params, name=name, use_deny=use_deny, log=log)
    manifest = {"key": key, **manifest}
    atomic_write(folder / CROPS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"key": key, "name": name}))
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    for old in base.glob(f"{tag}-*"):  # an older build of the same sources
        if old != folder and old.is_dir() and re.fullmatch(re.escape(tag) + r"-[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    c = manifest["counts"]
    excluded = ", ".join(f"{k} {v}" for k, v in c["excluded"].items()) or "none"
    log(f"{name}: {c['photos']} photos ({c['train_photos']} train / {c['test_photos']} test), "
        f"{c['train_crops']} + {c['test_crops']} crops of {params.size} px; excluded: {excluded} "
        f"(see {folder / MANIFEST_FILE})")
    return folder


def load_photos(split: str = "train", path: str | Path | None = None, *, data_config: dict | None = None,
                params: PhotoParams | None = None, cache_dir: str | Path | None = None, log: Log = _stderr) -> ImageSet:
    """``photos`` (``path`` None) or ``photos:PATH``'s ``split`` as an ImageSet of uint8
    N x C x size x size crops, C from the data config's channels (default RGB); unlabelled: every
    label is 0 (class "unlabelled")."""
    from safetensors import safe_open

    if split not in ("train", "test"):
        raise DataError(f"photos: unknown split {split!r} (train or test)")
    folder = photo_set(path, params, cache_dir=cache_dir, log=log)
    with safe_open(str(folder / CROPS_FILE), "pt") as f:
        images = f.get_tensor(split)
        name = (f.metadata() or {}).get("name", "photos")
    images = convert_channels(images, (data_config or {}).get("channels", "RGB"))
    return ImageSet(images, torch.zeros(len(images), dtype=torch.int64), ["unlabelled"], f"{name}/{split}")


def manifest(folder: str | Path) -> dict:
    """A built set's manifest (``photo_set``'s folder)."""
    return json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
