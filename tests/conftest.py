"""Exactness tests compare against finite differences in float64: enable it for the suite."""

import jax

jax.config.update("jax_enable_x64", True)
