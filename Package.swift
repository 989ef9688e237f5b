// swift-tools-version:6.0
// CryLab: self-supervised pretraining and fine-tuning on infant-cry audio.
//
// Module layering (dependencies point one way):
//   C shims (CBLAS, CDNNL, CFFTW, CHDF5, CMPI, CSndFile, CSoxr) and CryLabCore (seeded RNG, memory policy)
//     -> CryLabHDF5, CryLabAudio, CryLabDSP, CryLabTensor, CryLabMPI   (each the only importer of its C libraries;
//        CryLabTensor: tensors, the kernel protocols and ComputeContext, Swift and OpenBLAS kernels)
//     -> CryLabOneDNN (the only importer of CDNNL: implements CryLabTensor's kernel protocols on oneDNN)
//     -> CryLabFeatures (audio -> feature stores), CryLabNN (layers, models with their context and
//        execution plans, optimisers; layers name only the kernel protocols)
//     -> CryLabCheckpoint (Keras-layout HDF5 checkpoints)
//     -> CryLabTraining (recipes, pretraining, fine-tuning, evaluation, demo; folds across MPI ranks)
//     -> crylab (command line)
import PackageDescription

let package = Package(
    name: "CryLab",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "crylab", targets: ["crylab"]),
        .library(name: "CryLabFeatures", targets: ["CryLabFeatures"]),
        .library(name: "CryLabNN", targets: ["CryLabNN"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // Thin system-library shims: one per native library.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CFFTW", pkgConfig: "fftw3f", providers: [.apt(["libfftw3-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5-serial", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CSndFile", pkgConfig: "sndfile", providers: [.apt(["libsndfile1-dev"])]),
        .systemLibrary(name: "CSoxr", pkgConfig: "soxr", providers: [.apt(["libsoxr-dev"])]),

        // Pure Swift above the shims.
        .target(name: "CryLabCore"),
        .target(name: "CryLabHDF5", dependencies: ["CHDF5"]),
        .target(name: "CryLabAudio", dependencies: ["CSndFile", "CSoxr"]),
        .target(name: "CryLabDSP", dependencies: ["CryLabCore", "CFFTW"]),
        .target(name: "CryLabTensor", dependencies: ["CryLabCore", "CBLAS"]),
        .target(name: "CryLabOneDNN", dependencies: ["CryLabTensor", "CDNNL"]),
        .target(name: "CryLabMPI", dependencies: ["CMPI"]),
        .target(name: "CryLabFeatures", dependencies: ["CryLabCore", "CryLabAudio", "CryLabDSP", "CryLabHDF5"]),
        .target(name: "CryLabNN", dependencies: ["CryLabTensor", "CryLabOneDNN"]),
        .target(name: "CryLabCheckpoint", dependencies: ["CryLabNN", "CryLabHDF5", "CryLabDSP"]),
        .target(name: "CryLabTraining", dependencies: [
            "CryLabCore", "CryLabNN", "CryLabOneDNN", "CryLabFeatures", "CryLabCheckpoint", "CryLabMPI",
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(
            name: "crylab",
            dependencies: [
                "CryLabFeatures", "CryLabNN", "CryLabOneDNN", "CryLabCheckpoint", "CryLabTraining", "CryLabMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .executableTarget(name: "crylab-engine-bench", dependencies: ["CryLabNN", "CryLabOneDNN"], path: "Benchmarks/engine"),
        .executableTarget(name: "frontend-bench", dependencies: ["CryLabFeatures"], path: "Benchmarks/frontend"),

        .testTarget(name: "CryLabAudioTests", dependencies: ["CryLabCore", "CryLabAudio", "CryLabHDF5", "CryLabFeatures"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CryLabDSPTests", dependencies: ["CryLabDSP", "CryLabAudio"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CryLabNNTests", dependencies: ["CryLabNN", "CryLabOneDNN"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CryLabTrainingTests", dependencies: ["CryLabTraining"]),
        .testTarget(name: "CryLabMPITests", dependencies: ["CryLabMPI"]),
        .testTarget(name: "CryLabCheckpointTests", dependencies: ["CryLabCheckpoint", "CryLabFeatures", "CryLabTensor"], resources: [.copy("Fixtures")]),
    ]
)
