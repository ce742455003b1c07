"""Commands around a trained model or a run: predict, extract features, plot, the demo."""
