"""Loss functions of fmdepth: pure functions plus thin ``nn.Module`` wrappers.

photometric  SSIM, (robust) L1, photometric_error, per-pixel minimum, auto-mask
smoothness   edge-aware 1st/2nd order (disparity); gradient-L2 and bilateral 8-neighbour (flow)
feature      feature-metric loss; FeatureNet reconstruction / discriminative / convergent
similarity   local NCC, mutual information, normalised gradient fields, MIND-SSC (registration)
adversarial  GAN losses (translation-based registration)
"""
from .adversarial import GANLoss, discriminator_loss, gan_loss, generator_loss
from .feature import (FeatureMetricLoss, FeatureNetLoss, convergent_loss, discriminative_loss, feature_metric_loss,
                      featurenet_loss, reconstruction_loss)
from .photometric import (SSIM, PhotometricError, automask, min_reprojection, photometric_error, robust_l1,
                          ssim)
from .similarity import (MINDSSC, NGF, SIMILARITIES, LocalNCC, MutualInformation, Similarity, correlation_ratio,
                         local_ncc, mind_descriptor, mind_ssc, mutual_information, ngf, to_gray)
from .smoothness import (BilateralSmoothness, EdgeAwareSmoothness, FlowSmoothness, bilateral_smoothness,
                         edge_aware_smoothness, flow_smoothness)

__all__ = [
    # photometric
    "ssim", "robust_l1", "photometric_error", "min_reprojection", "automask", "SSIM", "PhotometricError",
    # smoothness
    "edge_aware_smoothness", "flow_smoothness", "bilateral_smoothness",
    "EdgeAwareSmoothness", "FlowSmoothness", "BilateralSmoothness",
    # feature-metric
    "feature_metric_loss", "reconstruction_loss", "discriminative_loss", "convergent_loss", "featurenet_loss",
    "FeatureMetricLoss", "FeatureNetLoss",
    # similarity
    "local_ncc", "mutual_information", "correlation_ratio", "ngf", "mind_descriptor", "mind_ssc", "LocalNCC", "MutualInformation", "NGF",
    "MINDSSC", "Similarity", "SIMILARITIES", "to_gray",
    # adversarial
    "gan_loss", "discriminator_loss", "generator_loss", "GANLoss",
]
