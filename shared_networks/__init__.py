"""MAE self pre-training for medical images: the public names the bundles' configs use.

Every ``_target_`` and ``$`` expression in a bundle config names ``shared_networks.<Name>`` from this list, so a
config stays valid whatever the package's internal layout. Sub-packages, imported top to bottom (none imports a layer
above its own): ``utils`` (files, flags, paths), ``networks`` (ViT, MAE, UNETR, classifier, weight hand-off),
``engine`` (optimiser groups, checkpoints, seeding, ignite handlers, metrics, distributed, command-line override
check), ``data`` (datalists, readers, transforms), ``validation`` (data-set checks), ``synthetic`` (demo phantoms),
``dicom`` (DICOM writers and STOW-RS upload, for a PACS), ``tools`` (export, model-zoo checks, report) and ``cli`` (the
command lines). Importing this package loads the runtime layers only (utils, networks, engine, data, validation): what
a bundle runs (training workflows check their split with ``check_split`` first), and what a release packs.
"""

from shared_networks.data.batch import BatchAugment2d
from shared_networks.data.brats import brats_datalist, brats_inference_inputs, case_name_formatter
from shared_networks.data.btcv import btcv_datalist
from shared_networks.data.cache_budget import cache_rate_for
from shared_networks.data.caching import AfterCache, MemoryThenDiskDataset
from shared_networks.data.cxr14 import CXR14_FINDINGS, cxr14_datalist, list_xray_inputs
from shared_networks.data.dicom_display import DicomRadiographReader
from shared_networks.data.features import EncoderFeaturesd
from shared_networks.data.loading import CheckedLoadImaged, ImageReadError
from shared_networks.data.options import (
    drop_last_batch,
    image_items,
    interp_modes,
    keep_workers,
    normalized_value,
    prefetch_batches,
    scaled_sizes,
)
from shared_networks.data.plain import ComposeWithoutMeta
from shared_networks.data.prepared import LoadPreparedRadiographd, check_prepared_images, prepared_transforms
from shared_networks.data.pretrain import log_pretrain_images
from shared_networks.data.radiographs import CheckedPILReader, ToGreyd
from shared_networks.data.readers import list_image_inputs, require_split
from shared_networks.data.regions import CheckChannelCountd, LabelToRegionsd, RegionsToLabeld
from shared_networks.engine.checkpoints import AtomicCheckpointSaver, ResumableCheckpointSaver
from shared_networks.engine.distributed import (
    DistributedTrainer,
    destroy_process_group,
    init_process_group,
    is_not_rank0,
    local_device,
    rank0_only,
    scale_lr,
    set_rank_determinism,
)
from shared_networks.engine.finite import FiniteCheckpointLoader, StopOnNonFinite
from shared_networks.engine.handlers import (
    EncoderFreeze,
    PretrainedEncoderLoader,
    ReconstructionSaver,
    ValidationEveryAndLast,
    prepare_image_as_target,
)
from shared_networks.engine.metrics import (
    ClassificationReport,
    HausdorffDistanceMM,
    MeanROCAUC,
    MetricsReport,
    PenalizedHausdorffDistanceMetric,
)
from shared_networks.engine.optim import param_groups_lrd
from shared_networks.engine.overrides import check_overrides
from shared_networks.engine.runtime import (
    AutocastInferer,
    configure_threads,
    default_device,
    loader_worker_init,
    loader_workers,
)
from shared_networks.engine.schedules import epoch_steps, pretrain_or_finetune, scaled_lr
from shared_networks.engine.seeding import EpochSeeder
from shared_networks.engine.selection import SelectedModelSaver, ValidationCoverage, ValidationLoss
from shared_networks.engine.tracking import evaluation_artifacts, iteration_loss, run_name
from shared_networks.networks.classifier import FeatureHead, ViTClassifier
from shared_networks.networks.handoff import (
    HandoffReport,
    NonFiniteError,
    first_non_finite,
    interpolate_pos_embed,
    load_pretrained_encoder,
    read_geometry,
)
from shared_networks.networks.mae import MaskedAutoencoderViT, MaskedPatchLoss, patchify, random_masking, unpatchify
from shared_networks.networks.unetr import UNETR
from shared_networks.networks.vit import GeometryRecord, PatchEmbed, ViTEncoder, sincos_pos_embed
from shared_networks.validation.problems import DatasetError
from shared_networks.validation.workflow import check_split, pixels_checked

__all__ = [
    # networks
    "UNETR",
    "GeometryRecord",
    "HandoffReport",
    "MaskedAutoencoderViT",
    "MaskedPatchLoss",
    "NonFiniteError",
    "PatchEmbed",
    "ViTClassifier",
    "FeatureHead",
    "ViTEncoder",
    "first_non_finite",
    "interpolate_pos_embed",
    "load_pretrained_encoder",
    "patchify",
    "random_masking",
    "read_geometry",
    "sincos_pos_embed",
    "unpatchify",
    # engine
    "AtomicCheckpointSaver",
    "AutocastInferer",
    "ClassificationReport",
    "DistributedTrainer",
    "EncoderFreeze",
    "EpochSeeder",
    "FiniteCheckpointLoader",
    "HausdorffDistanceMM",
    "MeanROCAUC",
    "MetricsReport",
    "PenalizedHausdorffDistanceMetric",
    "PretrainedEncoderLoader",
    "ReconstructionSaver",
    "ResumableCheckpointSaver",
    "SelectedModelSaver",
    "StopOnNonFinite",
    "ValidationCoverage",
    "ValidationEveryAndLast",
    "ValidationLoss",
    "check_overrides",
    "configure_threads",
    "default_device",
    "destroy_process_group",
    "epoch_steps",
    "evaluation_artifacts",
    "init_process_group",
    "is_not_rank0",
    "iteration_loss",
    "loader_worker_init",
    "loader_workers",
    "local_device",
    "param_groups_lrd",
    "prepare_image_as_target",
    "pretrain_or_finetune",
    "rank0_only",
    "run_name",
    "scale_lr",
    "scaled_lr",
    "set_rank_determinism",
    # data
    "AfterCache",
    "BatchAugment2d",
    "CXR14_FINDINGS",
    "CheckChannelCountd",
    "CheckedLoadImaged",
    "CheckedPILReader",
    "ComposeWithoutMeta",
    "EncoderFeaturesd",
    "DicomRadiographReader",
    "ImageReadError",
    "LabelToRegionsd",
    "LoadPreparedRadiographd",
    "MemoryThenDiskDataset",
    "RegionsToLabeld",
    "ToGreyd",
    "brats_datalist",
    "brats_inference_inputs",
    "btcv_datalist",
    "cache_rate_for",
    "case_name_formatter",
    "check_prepared_images",
    "cxr14_datalist",
    "drop_last_batch",
    "image_items",
    "interp_modes",
    "keep_workers",
    "list_image_inputs",
    "list_xray_inputs",
    "log_pretrain_images",
    "normalized_value",
    "prefetch_batches",
    "prepared_transforms",
    "require_split",
    "scaled_sizes",
    # validation
    "DatasetError",
    "check_split",
    "pixels_checked",
]
