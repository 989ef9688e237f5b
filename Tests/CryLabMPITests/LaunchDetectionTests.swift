import CryLabMPI
import Foundation
import Testing

@Suite("MPI launch detection")
struct LaunchDetectionTests {
    @Test("without a launcher's variables there is no communicator and MPI stays uninitialised")
    func notLaunched() throws {
        let communicator = try Communicator.initializeIfLaunched(environment: ["PATH": "/usr/bin", "SLURM_PROCID": "0"])
        #expect(communicator == nil)
        #expect(!Communicator.isActive, "MPI must not be initialised in a process no launcher started")
    }

    @Test("mpirun's, PMIx's and PMI's variables each count as a launch; their values are not read")
    func launchers() {
        for variable in ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"] {
            #expect(Communicator.isLaunched(environment: [variable: "not a number"]), "\(variable)")
        }
        #expect(!Communicator.isLaunched(environment: [:]))
    }

    @Test("the library answers its version without being initialised")
    func version() {
        #expect(Communicator.libraryVersion.contains("MPI"), "\(Communicator.libraryVersion)")
        #expect(!Communicator.isActive)
    }

    @Test("the cores this process may use are at least one and at most the machine's")
    func cores() {
        #expect((1...max(1, ProcessInfo.processInfo.activeProcessorCount)).contains(coresAvailableToThisProcess()))
    }
}
