"""What a network looks at: Captum's attribution maps and ZFNet's deconvnet (``maps``), and the
figures drawn from them (``drawing``)."""
