"""Image files and pictures: the content-addressed image store, grids and upload-size fitting."""
