"""GPU kernels of the 3D-UNet (Triton) and what uses them.

- plugins.reference: plain-torch references of every op (CPU fallback, test ground truth).
- plugins._kernels: the Triton kernels (channels-last activations).
- plugins.ops: host wrappers and the torch custom ops ``torch.ops.unet3d.*``.
- plugins.unet: the whole network as a chain of fused kernels (fp16 / bf16 / fp8), CUDA graph wrapper.
- plugins.tensorrt_plugins: NVIDIA's plugins as TensorRT QDP plugins (the tensorrt helper's).
"""
