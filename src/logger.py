"""One logger for the whole application, aware of the process rank."""
import logging
import sys

LOGGER_NAME = "tinybert"


def get_logger(rank=0):
    """Lines go to stdout (the launch scripts redirect it to log.txt); ranks other than 0 say who they are."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        prefix = "" if rank == 0 else f"[rank {rank}] "
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
