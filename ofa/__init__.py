"""Once-for-all supernets trained with attentive sampling."""
