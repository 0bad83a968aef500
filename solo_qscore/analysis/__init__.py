"""Pure analysis functions of the two papers (heat maps, mIoU, associations, ...)."""
