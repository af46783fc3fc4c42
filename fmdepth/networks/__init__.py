"""Neural networks (nn.Modules only): ResNet encoders, depth/pose/feature networks and the
registration networks. Images go in as floats in [0, 1]; normalisation (ImageNet by default) is internal."""
from .resnet import PretrainedWeightsError, ResnetEncoder, encoder_channels
from .depth import Conv3x3, ConvBlock, DepthDecoder, DepthNet
from .crp_decoder import CRPDepthDecoder
from .pose import PoseDecoder, PoseNet
from .feature import FeatureNet
from .registration import AffineRegressor, PatchDiscriminator, ResnetTranslator, UNetFlow
from .semantic import SemanticAligner
from .vgg import VGG19Features
