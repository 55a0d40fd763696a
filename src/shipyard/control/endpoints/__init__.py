"""Models, endpoint configurations and endpoints: deployments (create, update, heal, delete)
apart from routing invocations to them."""
