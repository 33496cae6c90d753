"""tfgraft: Filter Grafting, stripe-wise pruning, EKG and LW-DNA for Keras 3."""

import setuptools

setuptools.setup(
    name="tfgraft",
    version="0.1.0",
    description=(
        "Filter Grafting, Pruning Filter in Filter, EKG and LW-DNA for "
        "TensorFlow 2 / Keras 3"
    ),
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["tfgraft", "tfgraft.*", "train"]
    ),
    exclude_package_data={"": ["BUILD"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets",
        "keras-cv",
        "absl-py",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
    license="Apache-2.0",
)
