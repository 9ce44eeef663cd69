"""Weights in from other frameworks (`from_keras`); Keras is imported only there."""
