"""Look inside a trained network: feature maps, filters, CAM and Grad-CAM, t-SNE and GMM.

    from minicnn.viz import activations, grad_cam, load_run, views
    run = load_run("runs/vgg8_bn-20250101-120000")            # best.npz, the model in eval mode
    maps = activations(run.model, x, ["conv1"])["conv1"]       # x: (N, 3, 32, 32) normalized
    heat, logits = grad_cam(run.model, x, "conv6")             # (N, h, w) per image
    views.tsne(run, "fc1", "figs/", samples=2000, gmm=10)      # PNG + scores JSON
"""
from minicnn.viz.activations import activations, features, layer_table
from minicnn.viz.cam import CamError, class_activation_maps, grad_cam, upsample_bilinear
from minicnn.viz.embed import EmbedConfig, cluster_scores, embed
from minicnn.viz.runs import LoadedRun, VizError, latest_run, load_run

__all__ = ["activations", "features", "layer_table", "CamError", "class_activation_maps", "grad_cam",
           "upsample_bilinear", "EmbedConfig", "cluster_scores", "embed", "LoadedRun", "VizError",
           "latest_run", "load_run"]
