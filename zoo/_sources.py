"""The authors' released checkpoints that ``sslzoo convert SOURCE FILE`` turns into zoo models.

Plain data (no torch): the registry builds its ``store:`` entries from it, ``_convert`` the models.
Each ``Source`` says where the original file is, what it is (paper, licence, input convention)
and which trunk reproduces it (``zoo/_alexnets.py``, ``_nin.py``, ``_resnet.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _data(size: int, mean, std, crop_pct: float, note: str) -> dict[str, Any]:
    return {"input_size": [3, size, size], "mean": list(mean), "std": list(std), "interpolation": "bilinear",
            "crop_pct": crop_pct, "channels": "RGB", "note": note}


IN1K_224 = _data(224, IMAGENET_MEAN, IMAGENET_STD, 0.875,
                 "RGB in [0, 1] normalised with the ImageNet mean/std; resize 256, centre crop 224")
IN1K_227 = _data(227, IMAGENET_MEAN, IMAGENET_STD, 227 / 256,
                 "RGB in [0, 1] normalised with the ImageNet mean/std; resize 256, centre crop 227 "
                 "(VISSL resizes to 256x256 without keeping the aspect ratio)")
LAB_227 = _data(227, [0.0] * 3, [1.0] * 3, 227 / 256,
                "RGB in [0, 1], no normalisation: the trunk converts to Lab and keeps L - 50; resize 256, crop 227")
LAB_224 = _data(224, [0.0] * 3, [1.0] * 3, 0.875,
                "RGB in [0, 1], no normalisation: the trunk converts to Lab and keeps L - 50; resize 256, crop 224")
CIFAR_32 = _data(32, [x / 255 for x in (125.3, 123.0, 113.9)], [x / 255 for x in (63.0, 62.1, 66.7)], 1.0,
                 "RGB in [0, 1] normalised with RotNet's CIFAR-10 mean/std; 32x32")
TILE_75 = _data(75, [0.0] * 3, [1.0] * 3, 1.0,
                "RGB in [0, 1]; the trunk standardises each image per channel (the authors' per-tile "
                "normalisation); trained on 64-px tiles resized to 75 px")

ROTNET = "Gidaris, Singh & Komodakis, *Unsupervised Representation Learning by Predicting Image Rotations*, ICLR 2018, arXiv:1803.07728"
DEEPCLUSTER = "Caron, Bojanowski, Joulin & Douze, *Deep Clustering for Unsupervised Learning of Visual Features*, ECCV 2018, arXiv:1807.05520"
JIGSAW = "Noroozi & Favaro, *Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles*, ECCV 2016, arXiv:1603.09246"
COLOR = "Zhang, Isola & Efros, *Colorful Image Colorization*, ECCV 2016, arXiv:1603.08511"
GOYAL = "Goyal, Mahajan, Gupta & Misra, *Scaling and Benchmarking Self-Supervised Visual Representation Learning*, ICCV 2019, arXiv:1905.01235"
VISSL = "https://github.com/facebookresearch/vissl/blob/main/MODEL_ZOO.md"
ZOO_URL = "https://dl.fbaipublicfiles.com/vissl/model_zoo/"
ROTNET_REL = "https://github.com/gidariss/FeatureLearningRotNet/releases/download/v1/"
GOYAL_LICENSE = "VISSL model zoo (VISSL's code is MIT); Goyal et al. 2019's weights come from fair_self_supervision_benchmark: check its terms"


@dataclass(frozen=True)
class Source:
    id: str  # the SOURCE argument of `sslzoo convert`
    name: str  # zoo name it is stored under, <pretext>-<arch>.<tag>
    title: str
    url: str  # where to download the original file
    repo: str
    paper: str
    license: str  # Hub licence id
    license_note: str
    architecture: str
    arch_args: dict[str, Any]
    pretext: str
    data_config: dict[str, Any]
    layout: str  # key layout _convert maps: vissl_alexnet, deepcluster, nin, resnet, bbrattoli
    input_convention: str
    head: dict[str, Any] | None = None  # pretext_args when the checkpoint's pretext head is kept
    dataset: str = "imagenet-1k"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def config(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "arch_args": dict(self.arch_args), "pretext": self.pretext,
                "pretext_args": None if self.head is None else dict(self.head), "data_config": dict(self.data_config)}

    def command(self, file: str = "FILE") -> str:
        return f"sslzoo convert {self.id} {file}"


_RGB = "RGB in [0, 1] normalised with the ImageNet mean/std"
SOURCES: dict[str, Source] = {s.id: s for s in [
    Source("rotnet-alexnet", "rotation-alexnet.in1k", "RotNet AlexNet trained on ImageNet (authors' PyTorch release)",
           ROTNET_REL + "ImageNet_RotNet_AlexNet.tar.gz (the .tar.gz itself or its model_net_epoch50)",
           "https://github.com/gidariss/FeatureLearningRotNet", ROTNET, "mit", "MIT (FeatureLearningRotNet)",
           "alexnet_rotnet", {}, "rotation", IN1K_224, "vissl_alexnet", _RGB, head={"hidden": 4096},
           notes=("The rotation head (fc 9216-4096-4096-4 with BatchNorm) is kept: predict_pretext works.",
                  "The authors note this release is not the paper's model (it scores slightly better).")),
    Source("vissl-rotnet-alexnet", "rotation-alexnet.in1k", "RotNet AlexNet (official weights, VISSL model zoo copy)",
           ZOO_URL + "rotnet_alexnet_model_net_epoch50.torch", VISSL, ROTNET, "mit", "MIT",
           "alexnet_rotnet", {}, "rotation", IN1K_224, "vissl_alexnet", _RGB),
    Source("rotnet-nin", "rotation-nin.cifar10", "RotNet Network-in-Network, 4 blocks, trained on CIFAR-10",
           ROTNET_REL + "CIFAR10_RotNet_NIN4blocks.tar.gz (the .tar.gz itself or its model_net_epoch200)",
           "https://github.com/gidariss/FeatureLearningRotNet", ROTNET, "mit", "MIT (FeatureLearningRotNet)",
           "nin", {"num_blocks": 4}, "rotation", CIFAR_32, "nin",
           "RGB in [0, 1] normalised with mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255; 32x32",
           dataset="cifar10", notes=("The rotation classifier (global average pool -> linear 192-4) is dropped.",)),
    Source("deepcluster-alexnet", "deepcluster-alexnet.in1k", "DeepCluster AlexNet (Sobel, BN) trained on ImageNet",
           "https://dl.fbaipublicfiles.com/deepcluster/alexnet/checkpoint.pth.tar",
           "https://github.com/facebookresearch/deepcluster", DEEPCLUSTER, "cc-by-nc-4.0", "CC BY-NC 4.0 (deepcluster)",
           "alexnet_deepcluster", {}, "deepcluster", IN1K_224, "deepcluster",
           _RGB + "; the trunk's fixed front end turns it into gray then Sobel x/y (2 channels)",
           notes=("fc6/fc7 (classifier) and the 10000-cluster top layer are dropped.",)),
    Source("vissl-deepcluster-alexnet", "deepcluster-alexnet.in1k", "DeepCluster AlexNet (official weights, VISSL copy)",
           ZOO_URL + "deepcluster_alexnet_checkpoint.torch", VISSL, DEEPCLUSTER, "cc-by-nc-4.0", "CC BY-NC 4.0",
           "alexnet_deepcluster", {}, "deepcluster", IN1K_224, "vissl_alexnet",
           _RGB + "; fixed Sobel front end (VISSL's file has no Sobel weights: the fixed filters are used)"),
    Source("vissl-jigsaw-alexnet", "jigsaw-alexnet.in1k", "Jigsaw AlexNet of Goyal et al. 2019 (Caffe2, converted by VISSL)",
           ZOO_URL + "converted_alexnet_jigsaw_in1k_pretext.torch", VISSL, JIGSAW + "; " + GOYAL, "other", GOYAL_LICENSE,
           "alexnet_jigsaw_caffe", {}, "jigsaw", IN1K_227, "vissl_alexnet",
           _RGB + " as VISSL's benchmark config feeds it (227 px); the original Caffe2 model read BGR",
           notes=("Trunk only: the jigsaw head was not part of the converted file.",)),
    Source("vissl-colorization-alexnet", "colorization-alexnet.in1k",
           "Colorization AlexNet of Goyal et al. 2019 (Caffe2, converted by VISSL)",
           ZOO_URL + "converted_alexnet_colorization_in1k_pretext.torch", VISSL, COLOR + "; " + GOYAL, "other",
           GOYAL_LICENSE, "alexnet_colorization_caffe", {}, "colorization", LAB_227, "vissl_alexnet",
           "Lab: the trunk sees only L - 50 (in [-50, 50]); give it RGB in [0, 1]"),
    Source("vissl-jigsaw-resnet50", "jigsaw-resnet50.in1k", "Jigsaw ResNet-50 of Goyal et al. 2019 (VISSL model zoo)",
           ZOO_URL + "converted_vissl_rn50_jigsaw_in1k_goyal19.torch", VISSL, JIGSAW + "; " + GOYAL, "other",
           GOYAL_LICENSE, "resnet50", {"front_end": "rgb", "layer4_stride": 2}, "jigsaw", IN1K_224, "resnet", _RGB,
           notes=("Also converts VISSL-trained jigsaw ResNet-50 checkpoints (classy_state_dict).",)),
    Source("vissl-rotnet-resnet50", "rotation-resnet50.in1k", "RotNet ResNet-50, 105 epochs, trained with VISSL",
           ZOO_URL + "rotnet_rn50_in1k_ep105_rotnet_8gpu_resnet_17_07_20.46bada9f/model_final_checkpoint_phase125.torch",
           VISSL, ROTNET, "mit", "MIT (VISSL)", "resnet50", {"front_end": "rgb", "layer4_stride": 2}, "rotation",
           IN1K_224, "resnet", _RGB),
    Source("vissl-colorization-resnet50", "colorization-resnet50.in1k",
           "Colorization ResNet-50 of Goyal et al. 2019 (VISSL model zoo)",
           ZOO_URL + "converted_vissl_rn50_colorization_in1k_goyal19.torch", VISSL, COLOR + "; " + GOYAL, "other",
           GOYAL_LICENSE, "resnet50", {"front_end": "lab_l", "layer4_stride": 1}, "colorization", LAB_224, "resnet",
           "Lab: the trunk sees only L - 50; give it RGB in [0, 1]. res5 keeps stride 1 (VISSL LAYER4_STRIDE 1)"),
    Source("bbrattoli-jigsaw-alexnet", "jigsaw-alexnet.in1k-bbrattoli",
           "Jigsaw context-free network AlexNet (bbrattoli/JigsawPuzzlePytorch)",
           "https://github.com/bbrattoli/JigsawPuzzlePytorch (no official weights file: a state_dict its "
           "JigsawTrain.py saved with Network.save)",
           "https://github.com/bbrattoli/JigsawPuzzlePytorch", JIGSAW, "other",
           "the repository states no licence", "alexnet_jigsaw_bbrattoli", {}, "jigsaw", TILE_75, "bbrattoli",
           "RGB in [0, 1] with per-image (per-tile) channel standardisation done by the trunk; 75 px tiles",
           notes=("fc6 (per tile), fc7 and the permutation classifier fc8 are dropped.",)),
]}

# the zoo name -> the source its "not converted yet" message points to (the first listed)
BY_NAME: dict[str, Source] = {}
for _s in SOURCES.values():
    BY_NAME.setdefault(_s.name, _s)
