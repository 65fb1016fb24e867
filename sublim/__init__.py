"""sublim: subliminal-learning experiments (Cloud, Le et al. 2025) at scale."""
