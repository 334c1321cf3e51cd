"""GPU kernels of the 3D-UNet (Triton), as torch custom ops and TensorRT plugins. The fused
whole-network executor that chains them is core.backends.torch.fused.

- plugins.reference: plain-torch references of every op (CPU fallback, test ground truth).
- plugins._kernels: the Triton kernels (channels-last activations).
- plugins.ops: host wrappers and the torch custom ops ``torch.ops.unet3d.*``.
- plugins.tensorrt_plugins: NVIDIA's plugins as TensorRT QDP plugins (the tensorrt helper's).
"""
