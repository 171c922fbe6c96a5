"""Library code of the tools: bundle export, model-zoo checks, the HTML report of a pre-training comparison."""
