"""The data stages: the TpuGraphs .npz format (npz), the synthetic generator, the download and
preprocess stages and the preprocessed cache they write."""
