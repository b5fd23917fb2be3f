"""What the tutorial stands on, kept out of helpers.py so that helpers.py reads as the tutorial.

environment: profiles (full / tiny), SMART_BATCHING_* variables, the device, output folders.
imdb:        IMDB from tfds, the official archive or a local copy; synthetic reviews; subsets.
models:      the tokenizer and the model (pretrained, tiny, or bert-base's shape at random).
memory:      peak memory of the process or the GPU, per phase.
lengths:     every sequence's token count in a dataset (a datasets.Dataset column-wise), once.

Nothing here imports helpers: helpers imports from here, never the other way round.
"""
