"""bnrepro's Hydra configs (`conf/` at the top of a checkout links here): a package, so that Hydra finds them as
pkg://bnrepro.conf in a checkout, an editable install and a wheel alike."""
