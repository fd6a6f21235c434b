"""bnrepro: a reproduction of Ioffe & Szegedy (2015), Batch Normalization."""
