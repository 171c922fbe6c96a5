"""Networks: ViT encoder, MAE and its masked-patch loss, UNETR, ViT classifier, pre-trained weight hand-off."""
