"""The course: what the notebooks, the slides and the benchmarks use, apart from the library.

==========================  =========================================================================================
``plotting``                the figures of the notebooks and the deck (matplotlib), one style for all
``style``                   that style: dpi, figure width and font sizes so that no text shows under 12 CSS px
``widgets``                 the interactive explorers (ipywidgets), one main widget per notebook
``sound``                   short waveforms repeated to a few seconds, long enough to hear (notebook 11)
``exercises``               the checked exercises: a checker per exercise, diagnoses first, the formula on request
``checking``                the checker machinery the exercises are made of (cases, known mistakes, verdicts)
``analytic``                exact denoisers for Gaussian-mixture data (no training: what a network approximates)
``reverse_process``         whole sampling trajectories, and the exact reverse of a noising step (notebook 02)
``learned_variance``        reading a model's learned variance, and sampling it with a fixed one (notebook 04)
``fast_sampling``           FID and time against the number of sampling steps (notebook 10)
``evaluate``                the quality numbers of a set of samples, and real images spoiled on purpose (09)
``waveforms``               synthetic 1-D signals for diffusion beyond images (notebook 11)
==========================  =========================================================================================
"""
