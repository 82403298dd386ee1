// GraphiQL for the ledger: queries over POST /graphql, subscriptions over graphql-ws at
// /graphql/ws. The token goes in the Headers tab as {"Authorization": "Bearer …"}; it is
// sent with every query and in the WebSocket's connection_init, and is not stored.
(function () {
  var origin = window.location.origin;
  var ws = new URL('/graphql/ws', origin);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: new URL('/graphql', origin).toString(),
    subscriptionUrl: ws.toString(),
  });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultEditorToolsVisibility: true,
      defaultHeaders: '{\n  "Authorization": "Bearer <token from POST /auth/login>"\n}',
      shouldPersistHeaders: false,
    })
  );
})();
