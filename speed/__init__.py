"""The speed paths, each one setting away from the plain torch path: compiled CPU kernels
(`fast_kernels`), CUDA graphs (`cuda_graphs`) and the host's threads and allocator. Imports
config and itself only."""
