"""grader: builds, inspects and runs students' Linux kernel modules, and grades them."""
__version__ = "0.1.0"
