// A small real gRPC server speaking runtime.v1.RuntimeService (Version, ListContainers) on a unix
// socket: a test double of the node's container runtime, an external system.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { MethodDefinition, sendUnaryData, ServerUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import {
  ContainerSchema,
  ContainerState,
  ListContainersRequestSchema,
  ListContainersResponseSchema,
  VersionRequestSchema,
  VersionResponseSchema,
} from '../src/gen/runtime/v1/api_pb.js';
import type { ListContainersRequest, ListContainersResponse, VersionRequest, VersionResponse } from '../src/gen/runtime/v1/api_pb.js';

export interface FakeCri {
  socket: string;
  /** container id → name, as the runtime would list them. */
  containers: Map<string, string>;
  listCalls: number;
  stop(): Promise<void>;
}

export async function startCriServer(runtimeName = 'containerd'): Promise<FakeCri> {
  const dir = mkdtempSync(join(tmpdir(), 'ke-cri-'));
  const socket = join(dir, 'cri.sock');
  const state: FakeCri = { socket, containers: new Map(), listCalls: 0, stop: async () => undefined };
  const server = new Server();
  const implementation: UntypedServiceImplementation = {
    Version: (_call: ServerUnaryCall<VersionRequest, VersionResponse>, callback: sendUnaryData<VersionResponse>) => {
      callback(null, create(VersionResponseSchema, { version: '0.1.0', runtimeName, runtimeVersion: 'v-test', runtimeApiVersion: 'v1' }));
    },
    ListContainers: (_call: ServerUnaryCall<ListContainersRequest, ListContainersResponse>, callback: sendUnaryData<ListContainersResponse>) => {
      state.listCalls++;
      callback(
        null,
        create(ListContainersResponseSchema, {
          containers: [...state.containers].map(([id, name]) => create(ContainerSchema, { id, metadata: { name, attempt: 0 }, state: ContainerState.CONTAINER_RUNNING })),
        }),
      );
    },
  };
  const method = <I extends DescMessage, O extends DescMessage>(name: string, input: I, output: O): MethodDefinition<MessageShape<I>, MessageShape<O>> => ({
    path: `/runtime.v1.RuntimeService/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v) => Buffer.from(toBinary(input, v)),
    requestDeserialize: (b) => fromBinary(input, b),
    responseSerialize: (v) => Buffer.from(toBinary(output, v)),
    responseDeserialize: (b) => fromBinary(output, b),
  });
  server.addService(
    {
      Version: method('Version', VersionRequestSchema, VersionResponseSchema),
      ListContainers: method('ListContainers', ListContainersRequestSchema, ListContainersResponseSchema),
    },
    implementation,
  );
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  state.stop = async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  };
  return state;
}
