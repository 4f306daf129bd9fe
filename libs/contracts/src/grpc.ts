// grpc-js service definitions for the contracts' services, serialised with protobuf-es, so
// servers and clients share one definition and no second codegen is needed.
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage, DescService, MessageShape } from '@bufbuild/protobuf';
import type { ServiceDefinition, MethodDefinition } from '@grpc/grpc-js';
import { KubeTags } from './gen/kappa/tagger/v1/tagger_pb.js';
import { Observer } from './gen/kappa/observer/v1/observer_pb.js';

function methodDefinition<I extends DescMessage, O extends DescMessage>(
  service: DescService,
  name: string,
  input: I,
  output: O,
  responseStream: boolean,
  requestStream: boolean,
): MethodDefinition<MessageShape<I>, MessageShape<O>> {
  return {
    path: `/${service.typeName}/${name}`,
    requestStream,
    responseStream,
    requestSerialize: (value) => Buffer.from(toBinary(input, value)),
    requestDeserialize: (bytes) => fromBinary(input, bytes),
    responseSerialize: (value) => Buffer.from(toBinary(output, value)),
    responseDeserialize: (bytes) => fromBinary(output, bytes),
  };
}

function serviceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.name] = methodDefinition(
      service,
      method.name,
      method.input,
      method.output,
      method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
    ) as MethodDefinition<unknown, unknown>;
  }
  return definition;
}

/** kappa.tagger.v1.KubeTags for grpc-js (methods: Lookup, Watch). */
export const kubeTagsServiceDefinition: ServiceDefinition = serviceDefinition(KubeTags);
/** kappa.observer.v1.Observer for grpc-js (methods: GetFlows). */
export const observerServiceDefinition: ServiceDefinition = serviceDefinition(Observer);
