"""Embedded datasets of real media made from nothing: AVE-form videos, clip sets, CG-MNIST."""
